-- Insert deduplication for the tables the fastpath writes. The fastpath's sink gives every
-- batch an `insert_deduplication_token` and records it (with the batch's queue entries)
-- before inserting; after a crash between the insert and the commit of the queue entries it
-- inserts the same batch again with the same token, and ClickHouse drops it instead of
-- storing every row twice (counts read without FINAL stay exact). A non-replicated MergeTree
-- remembers the last `non_replicated_deduplication_window` blocks per table; 0 (the default)
-- would disable deduplication. Replicated tables deduplicate already
-- (replicated_deduplication_window). Inserts without a token are deduplicated by their data's
-- hash: only a byte-identical block, which a ReplacingMergeTree would collapse anyway.
-- Settings only: an existing OONI database works unchanged, and running it again is a no-op.
ALTER TABLE fastpath MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE obs_openvpn MODIFY SETTING non_replicated_deduplication_window = 1000;
