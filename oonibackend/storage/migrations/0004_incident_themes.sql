-- Findings as Explorer shows them now: `themes` (its thematic pages filter on them) and a
-- `slug` for readable links (/findings/<slug>); show accepts either the id or the slug.
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS `themes` Array(String) DEFAULT [];
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS `slug` String DEFAULT '';
