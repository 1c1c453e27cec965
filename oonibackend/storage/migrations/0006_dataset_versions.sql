-- Generation numbers of the reference datasets (oonibackend/storage/versions.py). Every job
-- that swaps a dataset in (update-citizenlab, the URL-priorities route, update-fingerprints,
-- update-asnmeta) then inserts a row with a new, larger version; the processes holding an
-- in-memory copy (check-in's URL snapshot, the fastpath's fingerprints) poll
-- `max(version) ... GROUP BY name` and reload as soon as it moves, instead of waiting for
-- their periodic refresh. A new table only: an existing OONI database works unchanged. Rows
-- of one name merge down to the newest; readers take max(version) either way.
CREATE TABLE IF NOT EXISTS dataset_versions
(
    `name` String,
    `version` UInt64,
    `updated` DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;
