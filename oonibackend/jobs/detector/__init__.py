"""The blocking-event detector (`oonibackend detect`): per-series moving averages of fastpath
outcomes, a status with hysteresis, and an event at each change point. Pure logic in
changepoint/series, database I/O in job. The API serves the events (GET
/api/v1/detector/events) through queries/detector_events.py and queries/detector_feed.py."""
