"""Paused CRMs, shared by every worker through the database: the circuit breaker's pauses and a user's.

The breaker's pauses are rows of ``crmsync_circuits`` on PostgreSQL and in-process on SQLite (one
worker). A user's pause (the status page) is a row on both, with ``paused_by_user`` set: the breaker
never grows, probes nor lifts such a row (its ``probe_at`` is in the year 9999, and ``open_circuit`` and
``close_circuit`` leave rows with ``paused_by_user`` alone), so only :meth:`CircuitsMixin.resume` ends it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import StoreError
from ..queue import (
    CircuitState,
)
from .base import StoreBase, _aware, _utcnow
from .tables import circuit_table

#: a user's pause is probed never: its probe time is as far as a datetime goes
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)


class CircuitsMixin(StoreBase):
    # -- circuit breaker -----------------------------------------------------------------------------

    async def circuit(self, crm: str) -> CircuitState | None:
        """Whether ``crm`` is paused (by the circuit breaker or a user), and until when (``None``: not
        paused). A user's pause wins over the breaker's."""
        if not self.shares_rate_limits:
            held = await self._read_circuit(crm, user_only=True)
            return held or self._local_circuits.get(crm)
        return await self._read_circuit(crm, user_only=False)

    async def _read_circuit(self, crm: str, *, user_only: bool) -> CircuitState | None:
        # Reading never creates the table: `crmsync status` may run with a read-only role.
        table = (
            self._circuits
            if self._circuits is not None
            else circuit_table(schema=self.layout.schema)
        )
        columns: list[Any] = [table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds]
        statement = sa.select(*columns, table.c.paused_by_user).where(table.c.crm == crm)
        if user_only:
            statement = statement.where(table.c.paused_by_user.is_not(None))
        row: tuple[Any, ...] | None
        try:
            async with self._transaction(None) as conn:
                found = (await conn.execute(statement)).one_or_none()
            row = None if found is None else tuple(found)
        except (sa_exc.ProgrammingError, StoreError) as exc:
            # No table yet (nobody ever paused a CRM), or on PostgreSQL one made before user pauses
            # existed: read it without their column.
            if user_only or isinstance(exc, StoreError):
                if isinstance(exc, StoreError) and "no such table" not in str(exc):
                    raise
                return None
            try:
                async with self._transaction(None) as conn:
                    old = (
                        await conn.execute(sa.select(*columns).where(table.c.crm == crm))
                    ).one_or_none()
            except sa_exc.ProgrammingError:
                return None
            row = None if old is None else (*old, None)
        if row is None:
            return None
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]), row[3])

    async def open_circuit(
        self, crm: str, *, now: datetime, cooldown: float, max_cooldown: float
    ) -> CircuitState:
        """Pause ``crm``: first for ``cooldown`` seconds; again while paused, for twice the last
        cool-down (at most ``max_cooldown``). Every worker sharing the database sees it. A user's pause
        is left as it is (and returned)."""
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
                # A user's pause is theirs to lift: the breaker neither shortens nor grows it.
                where=table.c.paused_by_user.is_(None),
            )
            .returning(table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds)
        )
        async with self._transaction(None) as conn:
            row = (await conn.execute(statement)).one_or_none()
        if row is None:
            held = await self._read_circuit(crm, user_only=True)
            if held is not None:
                return held
            return await self.open_circuit(
                crm, now=now, cooldown=cooldown, max_cooldown=max_cooldown
            )
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]))

    async def close_circuit(self, crm: str) -> None:
        """The CRM answers again: resume it for every worker (a user's pause stays)."""
        if not self.shares_rate_limits:
            self._local_circuits.pop(crm, None)
            return
        table = await self._circuit_table()
        async with self._transaction(None) as conn:
            await conn.execute(
                sa.delete(table).where(table.c.crm == crm, table.c.paused_by_user.is_(None))
            )

    # -- a user's pause ------------------------------------------------------------------------------

    async def pause(self, crm: str, *, reason: str, now: datetime | None = None) -> CircuitState:
        """Pause ``crm`` for every worker until :meth:`resume`: runs stop at once, its contacts stay
        queued with no attempt used. ``reason`` is shown with the pause. The circuit breaker never
        lifts it."""
        self.layout.columns_for(crm)
        now = now or _utcnow()
        reason = reason.strip() or "paused by a user"
        table = await self._circuit_table()
        values = {
            "crm": crm,
            "opened_at": now,
            "probe_at": _NEVER,
            "cooldown_seconds": 0.0,
            "paused_by_user": reason,
        }
        insert = postgresql.insert(table) if self.shares_rate_limits else sqlite.insert(table)
        statement = insert.values(**values).on_conflict_do_update(
            index_elements=[table.c.crm],
            set_={k: v for k, v in values.items() if k != "crm"},
        )
        async with self._transaction(None) as conn:
            await conn.execute(statement)
        return CircuitState(crm, now, _NEVER, 0.0, reason)

    async def resume(self, crm: str) -> bool:
        """Lift a pause of ``crm``, a user's or the circuit breaker's (the next run sends at full
        speed). Returns whether it was paused."""
        self.layout.columns_for(crm)
        was_local = self._local_circuits.pop(crm, None) is not None
        if self._circuits is None and await self._read_circuit(crm, user_only=False) is None:
            return was_local
        table = await self._circuit_table()
        async with self._transaction(None) as conn:
            deleted = (await conn.execute(sa.delete(table).where(table.c.crm == crm))).rowcount
        return was_local or deleted > 0

    async def _circuit_table(self) -> sa.Table:
        if self._circuits is None:
            table = circuit_table(schema=self.layout.schema)
            try:
                async with self._transaction(None) as conn:
                    await conn.run_sync(table.create, checkfirst=True)
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it between our check and our CREATE.
                pass
            if self.dialect == "postgresql":
                # Tables made before user pauses existed lack the column: add it (additive), and
                # only then, so that a worker's start takes no lock on a table that is up to date.
                async with self._transaction(None) as conn:
                    present = await conn.run_sync(
                        lambda sync: {
                            c["name"]
                            for c in sa.inspect(sync).get_columns(table.name, schema=table.schema)
                        }
                    )
                    if "paused_by_user" not in present:
                        name = conn.dialect.identifier_preparer.format_table(table)
                        await conn.execute(
                            sa.text(
                                f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS paused_by_user text"
                            )
                        )
            self._circuits = table
        return self._circuits
