"""The blocking-event detector: per-series moving averages of fastpath outcomes, a status with
hysteresis, and an event at each change point (`oonibackend detect`, GET
/api/v1/detector/events). Pure logic in changepoint/series/feed, the feed's query in
event_query; database I/O in job."""
