"""`RetryingInsert`: a batch insert retried with back-off, halved when its data is invalid.

Shared by the fastpath's sink (workers/intake/sink.py) and reprocessing (workers/reprocess.py),
which differ only in what a batch is and how hard they insist:

* the database is down (DatabaseUnavailable) or fails otherwise: try again after `retry_min`
  seconds, doubling up to `retry_max`; never drop the rows. Reprocessing gives up on an error
  that is not a lost connection after `other_tries` tries (a missing table, say), since
  retrying cannot fix it and an operator is watching;
* ClickHouse says the *data* is invalid (parse / type errors, `is_data_error`): retrying the
  same rows cannot succeed, so after `data_tries` such failures the batch is split in halves,
  each inserted the same way, until the offending item is alone; that one is `_reject`ed
  (quarantine, or a file kept for inspection) and the rest go in;
* `sturdy` (the sink, which must never die): a row that cannot even be encoded (TypeError /
  ValueError, a bug upstream) is a data error, and any other exception is retried like an
  outage. Otherwise such exceptions are raised.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

from oonibackend.storage import DatabaseError, DatabaseUnavailable

# ClickHouse error codes meaning "these values cannot go into this table".
DATA_ERROR_CODES = frozenset({
    6, 25, 26, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 691,
})

B = TypeVar("B")


def is_data_error(e: DatabaseError) -> bool:
    return not isinstance(e, DatabaseUnavailable) and getattr(e, "code", None) in DATA_ERROR_CODES


class RetryingInsert(ABC, Generic[B]):
    """Inserts batches of type `B` with `deliver`; subclasses say how a batch is inserted,
    split and rejected, and set the policy attributes."""

    retry_min: float = 0.1
    retry_max: float = 60.0
    data_tries: int = 1  # failures with a data error before the batch is split
    other_tries: int | None = None  # failures with another database error before raising
    sturdy: bool = False

    async def deliver(self, batch: B) -> None:
        """Insert `batch` until it is in, split or rejected (see the module docstring)."""
        delay = self.retry_min
        data_errors = other_errors = 0
        while True:
            try:
                await self._insert(batch)
                break
            except Exception as e:
                data = self._is_data(e)
                if data is None:
                    raise
                if data:
                    data_errors += 1
                    if data_errors >= self.data_tries:
                        self._failed(batch, e, None)
                        await self._split(batch, e)
                        return
                elif isinstance(e, DatabaseError) and not isinstance(e, DatabaseUnavailable):
                    other_errors += 1
                    if self.other_tries is not None and other_errors >= self.other_tries:
                        self._failed(batch, e, None)
                        raise
                self._failed(batch, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
        self._inserted(batch)

    def _is_data(self, e: Exception) -> bool | None:
        """True: a data error; False: retry; None: not an insert failure, raise it."""
        if isinstance(e, DatabaseError):
            return is_data_error(e)
        if not self.sturdy:
            return None
        return isinstance(e, TypeError | ValueError)

    async def _split(self, batch: B, e: Exception) -> None:
        halves = await self._halves(batch)
        if halves is None:
            await self._reject(batch, e)
            return
        for half in halves:
            await self.deliver(half)

    @abstractmethod
    async def _insert(self, batch: B) -> None:
        """One try."""

    @abstractmethod
    async def _halves(self, batch: B) -> Sequence[B] | None:
        """The two halves of `batch`, or None when it holds a single item."""

    @abstractmethod
    async def _reject(self, batch: B, error: Exception) -> None:
        """A single item the database refuses: keep it out of the way."""

    def _failed(self, batch: B, error: Exception, retry_in: float | None) -> None:
        """A failed try (called in the except block), retried in `retry_in` seconds, or not
        retried (None: split, or raised)."""

    def _inserted(self, batch: B) -> None:
        """`batch` is in the database."""
