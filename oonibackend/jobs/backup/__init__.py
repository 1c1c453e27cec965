"""Backups, public exports and restores of the ClickHouse tables through the object store.

    oonibackend backup [--dry-run] [--tables T,..] [--run ID]   daily: every configured table
    oonibackend export [--dry-run] [--tables T,..] [--since YYYY-MM]   public CSV exports
    oonibackend restore --table T [--run ID] [--into NEW] [--replace]

Data leaves the database as ClickHouse's own text format (TabSeparatedWithNamesAndTypes for
backups: exact round trip, header checked on restore; CSVWithNames for exports), is
zstd-compressed on the fly and streamed into the object store: no temporary file, bounded
memory. `plan` decides what the chunks and keys are (pure), `stream` moves and measures the
bytes, `state` keeps the backup resumable, `catalog` asks the database about tables.
"""
