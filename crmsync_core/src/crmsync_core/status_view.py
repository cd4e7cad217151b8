"""What the status page shows, as plain data: gathered by :mod:`crmsync_core.status_page`, rendered by
:mod:`crmsync_core.status_html` (so that neither imports the other's types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .history import AttemptRecord, HourlyOutcome, RunRecord
from .queue import CircuitState, ContactBrief, ContactState, FailureReason, StatusSummary

__all__ = ["CHART_HOURS", "ContactView", "CrmOverview", "StatusPage"]

#: the chart's span
CHART_HOURS = 24


@dataclass(frozen=True, slots=True)
class CrmOverview:
    """One CRM's panel."""

    crm: str
    summary: StatusSummary
    paused: CircuitState | None
    reasons: list[FailureReason]
    #: newest first (empty without history)
    runs: list[RunRecord]
    #: one entry per hour of the last :data:`CHART_HOURS`, oldest first (zeros without history)
    hours: list[HourlyOutcome]


@dataclass(frozen=True, slots=True)
class ContactView:
    """One contact found by the lookup: its state per CRM and its attempts (newest first)."""

    contact: ContactBrief
    states: dict[str, ContactState]
    attempts: list[AttemptRecord]


@dataclass(frozen=True, slots=True)
class StatusPage:
    """Everything the page shows."""

    now: datetime
    crms: list[CrmOverview]
    #: whether the store keeps run history (runs, attempts and the chart come from it)
    history: bool
    #: the lookup's query (``None``: no lookup) and what it found
    query: str | None = None
    found: list[ContactView] = field(default_factory=list)
    #: what the last action did, in words
    notice: str | None = None
    #: the path the forms post to (``{prefix}/status``)
    base: str = "/status"
