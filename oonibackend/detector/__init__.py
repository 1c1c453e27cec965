"""The blocking-event detector: per-series moving averages of fastpath outcomes, a status with
hysteresis, and an event at each change point (`oonibackend detect`, GET
/api/v1/detector/events). Pure logic in changepoint/series/feed; database I/O in job."""
