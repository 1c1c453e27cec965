"""The sanity check shared by jobs that load a `_tmp`/`_flip` table and swap it in.

A reference list that suddenly shrinks is far more often a broken source than a real change,
so an import that would empty a live table, or shrink it below half, is refused unless forced.
"""

from __future__ import annotations

MIN_RATIO = 0.5


class ImportRefused(Exception):
    """The sanity check failed; nothing was changed."""


def check_size(what: str, new: int, current: int, force: bool) -> None:
    """Refuse an empty `what`, or one below MIN_RATIO of the `current` live rows."""
    if force:
        return
    if new == 0:
        raise ImportRefused(f"{what}: no rows (use --force to import anyway)")
    if new < current * MIN_RATIO:
        raise ImportRefused(f"{what}: {new} rows, less than {MIN_RATIO:.0%} of the current "
                            f"{current} (use --force to import anyway)")
