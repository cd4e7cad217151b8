"""The circuit breaker's state: paused CRMs, shared by every worker through the database."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql

from ..queue import (
    CircuitState,
)
from .base import StoreBase, _aware
from .schema import circuit_table


class CircuitsMixin(StoreBase):
    # -- circuit breaker -----------------------------------------------------------------------------

    async def circuit(self, crm: str) -> CircuitState | None:
        """Whether ``crm`` is paused by the circuit breaker, and until when (``None``: not paused)."""
        if not self.shares_rate_limits:
            return self._local_circuits.get(crm)
        # Reading never creates the table: `crmsync status` may run with a read-only role.
        table = (
            self._circuits
            if self._circuits is not None
            else circuit_table(schema=self.layout.schema)
        )
        statement = sa.select(table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds).where(
            table.c.crm == crm
        )
        try:
            async with self._transaction(None) as conn:
                row = (await conn.execute(statement)).one_or_none()
        except sa_exc.ProgrammingError:
            return None  # no table yet: no CRM was ever paused
        if row is None:
            return None
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]))

    async def open_circuit(
        self, crm: str, *, now: datetime, cooldown: float, max_cooldown: float
    ) -> CircuitState:
        """Pause ``crm``: first for ``cooldown`` seconds; again while paused, for twice the last
        cool-down (at most ``max_cooldown``). Every worker sharing the database sees it."""
        if not self.shares_rate_limits:
            last = self._local_circuits.get(crm)
            seconds = min(last.cooldown_seconds * 2, max_cooldown) if last else cooldown
            state = CircuitState(
                crm, last.opened_at if last else now, now + timedelta(seconds=seconds), seconds
            )
            self._local_circuits[crm] = state
            return state
        table = await self._circuit_table()
        grown = sa.func.least(table.c.cooldown_seconds * 2, max_cooldown)
        statement = (
            postgresql.insert(table)
            .values(
                crm=crm,
                opened_at=now,
                probe_at=now + timedelta(seconds=cooldown),
                cooldown_seconds=cooldown,
            )
            .on_conflict_do_update(
                index_elements=[table.c.crm],
                set_={
                    "cooldown_seconds": grown,
                    "probe_at": sa.literal(now, sa.DateTime(timezone=True))
                    + sa.func.make_interval(0, 0, 0, 0, 0, 0, grown),
                },
            )
            .returning(table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds)
        )
        async with self._transaction(None) as conn:
            row = (await conn.execute(statement)).one()
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]))

    async def close_circuit(self, crm: str) -> None:
        """The CRM answers again: resume it for every worker."""
        if not self.shares_rate_limits:
            self._local_circuits.pop(crm, None)
            return
        table = await self._circuit_table()
        async with self._transaction(None) as conn:
            await conn.execute(sa.delete(table).where(table.c.crm == crm))

    async def _circuit_table(self) -> sa.Table:
        if self._circuits is None:
            table = circuit_table(schema=self.layout.schema)
            try:
                async with self._transaction(None) as conn:
                    await conn.run_sync(table.create, checkfirst=True)
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it between our check and our CREATE.
                pass
            self._circuits = table
        return self._circuits
