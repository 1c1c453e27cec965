-- Seekable jsonl.gz files (the uploader): every line of a jsonl.gz is its own gzip member, and
-- each row records where that member starts in the object and how long it is, so the read API
-- fetches one measurement with one ranged GET (`Range: bytes=byte_offset-(byte_offset+byte_length-1)`).
-- 0 / 0 for rows of files written without offsets: read those by `linenum`.
ALTER TABLE jsonl ADD COLUMN IF NOT EXISTS `byte_offset` UInt64 DEFAULT 0;
ALTER TABLE jsonl ADD COLUMN IF NOT EXISTS `byte_length` UInt32 DEFAULT 0;
