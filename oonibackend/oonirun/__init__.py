"""OONI Run links: descriptors of test campaigns that communities share and probes run.

One table (`oonirun`) serves both contracts: the legacy draft routes (`/api/_/ooni_run/...`)
and the v2 contract the current probe uses (`/api/v2/oonirun/links...`). Each row is one
(link, descriptor version); its translations are replaced in place (the row's version is
`translation_creation_time`). A v2 `revision` is the 1-based rank of a version's
`descriptor_creation_time`. model.py validates and compares descriptors (pure).
"""
