"""Faulty measurements: submissions recorded for later study, never refused or altered.

* `geoip`  - the pure rule: does a measurement's declared country / network match the address
             it came from, and the `faulty_measurements` row when it does not.
* `writer` - a bounded background batch writer (one INSERT per interval, drops when full).
* `record` - the wiring: the app's cleanup context and the hook `_store` calls.

See docs/current_services.md §2.
"""
