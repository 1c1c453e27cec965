"""Anonymous credentials (OONI's ooniauth protocol, docs/current_services.md §1).

Probes obtain a credential with `POST /api/v1/sign_credential` and prove with every
`POST /api/v1/submit_measurement` that they hold one, without revealing which: the verdict is
stored as `fastpath.is_verified`. Modules: `policy` (submission rules), `manifest` (the public
document and its version), `keys` (the files holding manifest and secret key), `verdict` (the
ordered rules of a submission), `verifier` (the library, off the event loop), `envelope` (what
is spooled), `cli` (key rotation).
"""
