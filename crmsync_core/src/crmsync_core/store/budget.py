"""The fleet's shared request budget: send slots kept in a table of crmsync's own (PostgreSQL)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql

from ..ratelimit import Bucket, Lease, Settled, Slot, plan, settle
from .base import StoreBase
from .tables import rate_limit_table


@dataclass(slots=True)
class _SlotRow:
    version: int
    slots: list[Slot]
    paused_until: float


#: how fast two clocks may drift apart (seconds per second), for the ledger's clock estimate
CLOCK_DRIFT = 1e-4


def _pairs(flat: Sequence[float]) -> list[Slot]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _flat(slots: Sequence[Slot]) -> list[float]:
    return [t for slot in slots for t in slot]


class SlotLedger:
    """The fleet's :class:`~crmsync_core.ratelimit.Ledger`: slots kept in :data:`RATE_LIMIT_TABLE`.

    Each worker keeps the last row it saw; a lease or a give-back is one ``UPDATE ... WHERE version = v``
    computed from it, and only when another worker changed the row in between does it read the row again
    (one more statement). Times are the database's clock (``clock_timestamp()``), which every machine
    shares; ``clock`` replaces it in tests.
    """

    def __init__(self, store: BudgetMixin, clock: Callable[[], float] | None = None) -> None:
        self._store = store
        self._clock = clock
        self._rows: dict[str, _SlotRow] = {}
        self._offset = 0.0  # database clock minus time.monotonic()
        # Half the round trip of the answer the offset came from, and when: the estimate's error.
        self._error = math.inf
        self._estimated_at = 0.0
        #: statements sent (for the benchmarks)
        self.statements = 0

    def now(self) -> float:
        """The database's clock, as estimated from the answer with the shortest round trip."""
        if self._clock is not None:
            return self._clock()
        return time.monotonic() + self._offset

    @property
    def uncertainty(self) -> float:
        """How far :meth:`now` may be from the database's clock: half the round trip it was estimated
        from, plus what the two clocks may have drifted apart since (100 ppm)."""
        if self._clock is not None:
            return 0.0
        if self._error == math.inf:
            return 0.0  # no estimate yet: nothing was leased on it either
        return self._error + CLOCK_DRIFT * (time.monotonic() - self._estimated_at)

    def _db_now(self, table: sa.Table) -> Any:
        if self._clock is not None:
            return sa.literal(self._clock(), postgresql.DOUBLE_PRECISION)
        return sa.extract("epoch", sa.func.clock_timestamp())

    def _saw(self, db_now: float, sent: float) -> None:
        # The database read its clock somewhere within the round trip: an answer replaces the estimate
        # only when it bounds the error better, so that the clock every slot is read on stays put.
        received = time.monotonic()
        error = (received - sent) / 2
        if self._error == math.inf or (self._clock is None and error < self.uncertainty):
            self._error, self._estimated_at = error, received
            self._offset = float(db_now) - (sent + received) / 2

    async def _read(self, key: str) -> _SlotRow:
        table = await self._store._rate_limit_table()
        statement = (
            postgresql.insert(table)
            .values(key=key, version=0, slots=[], paused_until=0.0)
            .on_conflict_do_update(index_elements=[table.c.key], set_={"version": table.c.version})
            .returning(table.c.version, table.c.slots, table.c.paused_until, self._db_now(table))
        )
        sent = time.monotonic()
        self.statements += 1
        async with self._store._transaction(None) as conn:
            version, slots, paused, db_now = (await conn.execute(statement)).one()
        self._saw(db_now, sent)
        row = self._rows[key] = _SlotRow(int(version), _pairs(slots), float(paused))
        return row

    async def _swap(self, key: str, row: _SlotRow, slots: list[Slot]) -> tuple[float, float] | None:
        """Write ``slots`` if nobody changed the row since ``row``; the pause and the clock, else ``None``."""
        table = await self._store._rate_limit_table()
        statement = (
            sa.update(table)
            .where(table.c.key == key, table.c.version == row.version)
            .values(version=table.c.version + 1, slots=_flat(slots))
            .returning(table.c.paused_until, self._db_now(table))
        )
        sent = time.monotonic()
        self.statements += 1
        async with self._store._transaction(None) as conn:
            result = (await conn.execute(statement)).one_or_none()
        if result is None:
            self._rows.pop(key, None)
            return None
        paused, db_now = float(result[0]), float(result[1])
        self._saw(db_now, sent)
        self._rows[key] = _SlotRow(row.version + 1, slots, paused)
        return paused, db_now

    async def lease(
        self,
        key: str,
        bucket: Bucket,
        count: int,
        settled: Sequence[Settled],
        not_before: float,
        validity: float | None = None,
        allowance: float | None = None,
    ) -> Lease:
        while True:
            row = self._rows.get(key) or await self._read(key)
            uncertainty = self.uncertainty  # known once the row was read
            held, slots = plan(
                row.slots,
                settled,
                bucket=bucket,
                count=count,
                now=self.now(),
                not_before=not_before,
                paused_until=row.paused_until,
                validity=validity,
                allowance=allowance,
                uncertainty=uncertainty,
            )
            done = await self._swap(key, row, held)
            if done is not None:
                paused, db_now = done
                if paused > row.paused_until and paused > slots[0][0]:
                    # Another worker paused the bucket in between: lease again, from after it.
                    settled = [(slot, None) for slot in slots]
                    continue
                return Lease(slots, paused, db_now, uncertainty)

    async def settle(self, key: str, bucket: Bucket, settled: Sequence[Settled]) -> None:
        while True:
            row = self._rows.get(key) or await self._read(key)
            if await self._swap(key, row, settle(row.slots, settled)) is not None:
                return

    async def pause(self, key: str, bucket: Bucket, until: float) -> None:
        table = await self._store._rate_limit_table()
        statement = (
            postgresql.insert(table)
            .values(key=key, version=0, slots=[], paused_until=until)
            .on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    # The latest reset wins: a pause is a moment, never added to another.
                    "paused_until": sa.func.greatest(table.c.paused_until, until),
                    "version": table.c.version + 1,
                },
            )
            .returning(table.c.version, table.c.paused_until)
        )
        self.statements += 1
        async with self._store._transaction(None) as conn:
            version, paused = (await conn.execute(statement)).one()
        row = self._rows.get(key)
        if row is not None and row.version + 1 == version:
            row.version, row.paused_until = int(version), float(paused)
        else:
            self._rows.pop(key, None)


class BudgetMixin(StoreBase):
    # -- shared request budgets ----------------------------------------------------------------------

    def rate_ledger(self, clock: Callable[[], float] | None = None) -> SlotLedger:
        """The ledger of shared request budgets (PostgreSQL); ``clock`` replaces the database's in tests."""
        return SlotLedger(self, clock)

    async def _rate_limit_table(self) -> sa.Table:
        if self._rate_limits is None:
            table = rate_limit_table(schema=self.layout.schema)
            try:
                async with self._transaction(None) as conn:
                    await conn.run_sync(table.create, checkfirst=True)
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it between our check and our CREATE.
                pass
            self._rate_limits = table
        return self._rate_limits
