-- Data-skipping indexes for the read API's selective filters. fastpath is sorted by time, so
-- a filter on one network, domain or URL otherwise reads the whole time window (1-2 s for
-- Explorer's "recent measurements" box of a domain page over 30 days of 10 M rows; 20-30 ms
-- with these). Additive: an existing OONI database works unchanged; its existing parts get the
-- indexes as they merge, or at once with
--   ALTER TABLE fastpath MATERIALIZE INDEX fastpath_probe_asn (and the two others).
ALTER TABLE fastpath ADD INDEX IF NOT EXISTS fastpath_probe_asn probe_asn TYPE bloom_filter GRANULARITY 1;
ALTER TABLE fastpath ADD INDEX IF NOT EXISTS fastpath_domain domain TYPE bloom_filter GRANULARITY 1;
ALTER TABLE fastpath ADD INDEX IF NOT EXISTS fastpath_input input TYPE bloom_filter GRANULARITY 1;
