"""Where a CRM's columns live in the host's contacts table (design.md section 4).

A :class:`Layout` names columns; it holds no SQL. Two layouts are built in:

* :meth:`Layout.default`: the table crmsync creates for new adopters and the demo. Per CRM: the four
  status columns plus its own retry state (``{crm}_attempts``, ``{crm}_next_attempt_at``,
  ``{crm}_claimed_at``), so one CRM's failures never touch another's schedule.
* :meth:`Layout.scrapersky`: ScraperSky's table as it is (``shared/scrapersky/contacts.sql``): native
  enum columns, ``n8n_workflow_id``, and one set of retry columns shared by every CRM (``retry_count``,
  ``last_retry_at``, ``next_retry_at``, ``last_failed_crm``). See :class:`CrmColumns` for how the shared
  counter is read. ``Layout.scrapersky(per_crm_retry=True)`` uses the per-CRM retry columns that the
  additive migration printed by ``crmsync schema --scrapersky`` adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .adapter import AdapterSpec

#: The contact fields adapters map from (design.md section 4), by their names in :class:`Contact`.
CONTACT_FIELDS: tuple[str, ...] = (
    "email",
    "name",
    "phone_number",
    "email_type",
    "has_gmail",
    "source_url",
    "domain_id",
    "page_id",
    "context",
)

#: The CRMs of the requirements, and the default layout's CRMs when none are named.
BUILTIN_CRMS: tuple[str, ...] = ("brevo", "hubspot", "mautic", "n8n")


@dataclass(frozen=True, slots=True)
class CrmColumns:
    """The columns that hold one CRM's state for a contact.

    With ``shared_retry`` the retry columns are shared by every CRM: the counter and next-attempt time
    belong to the CRM named in ``failed_crm``. For any other CRM the contact counts as never having
    failed, so one CRM's backoff never delays another; but a failure in one CRM overwrites a retry
    schedule another CRM left there. ``claimed_at`` is then ``updated_at``.
    """

    crm: str
    sync_status: str
    processing_status: str
    error: str
    remote_id: str
    attempts: str
    next_attempt_at: str
    last_attempt_at: str | None
    claimed_at: str
    failed_crm: str | None = None

    @property
    def shared_retry(self) -> bool:
        return self.failed_crm is not None

    @property
    def claim_is_token(self) -> bool:
        """Whether ``claimed_at`` is written only by crmsync, so a stale worker's results can be refused."""
        return not self.shared_retry

    @classmethod
    def conventional(cls, crm: str, *, remote_id: str | None = None) -> CrmColumns:
        return cls(
            crm=crm,
            sync_status=f"{crm}_sync_status",
            processing_status=f"{crm}_processing_status",
            error=f"{crm}_processing_error",
            remote_id=remote_id or f"{crm}_contact_id",
            attempts=f"{crm}_attempts",
            next_attempt_at=f"{crm}_next_attempt_at",
            last_attempt_at=f"{crm}_last_attempt_at",
            claimed_at=f"{crm}_claimed_at",
        )

    def retry_columns(self) -> tuple[str, ...]:
        """The columns the default layout adds for this CRM's retry state."""
        return tuple(
            c
            for c in (self.attempts, self.next_attempt_at, self.last_attempt_at, self.claimed_at)
            if c
        )


@dataclass(frozen=True)
class Layout:
    """The host's contacts table and where each CRM's columns are."""

    crms: Mapping[str, CrmColumns]
    table: str = "contacts"
    schema: str | None = None
    id_column: str = "id"
    updated_at: str | None = "updated_at"
    #: contact field name -> column name, for tables whose columns are named differently
    fields: Mapping[str, str] = field(default_factory=lambda: {f: f for f in CONTACT_FIELDS})
    #: extra filterable columns (e.g. ScraperSky's ``contact_curation_status``)
    curation_status: str | None = None
    #: crmsync creates and owns this table (the default layout)
    managed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crms", MappingProxyType(dict(self.crms)))
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        missing = set(CONTACT_FIELDS) - set(self.fields)
        if missing:
            raise ConfigurationError(f"layout.fields lacks {', '.join(sorted(missing))}")

    @classmethod
    def default(
        cls, crms: Iterable[str | AdapterSpec[Any]] = BUILTIN_CRMS, *, table: str = "contacts"
    ) -> Layout:
        """The table crmsync creates, with columns for ``crms`` (names or adapter specs)."""
        columns: dict[str, CrmColumns] = {}
        for crm in crms:
            if isinstance(crm, str):
                name, remote = crm, ("n8n_workflow_id" if crm == "n8n" else None)
            else:
                name, remote = crm.name, crm.remote_id_column_name
            columns[name] = CrmColumns.conventional(name, remote_id=remote)
        return cls(crms=columns, table=table, managed=True)

    @classmethod
    def scrapersky(cls, *, per_crm_retry: bool = False, table: str = "contacts") -> Layout:
        """ScraperSky's table, unchanged (or after the additive migration, with ``per_crm_retry``)."""
        columns = {}
        for crm in BUILTIN_CRMS:
            conventional = CrmColumns.conventional(
                crm, remote_id="n8n_workflow_id" if crm == "n8n" else None
            )
            if per_crm_retry:
                columns[crm] = conventional
            else:
                columns[crm] = replace(
                    conventional,
                    attempts="retry_count",
                    next_attempt_at="next_retry_at",
                    last_attempt_at="last_retry_at",
                    claimed_at="updated_at",
                    failed_crm="last_failed_crm",
                )
        return cls(crms=columns, table=table, curation_status="contact_curation_status")

    def columns_for(self, crm: str) -> CrmColumns:
        try:
            return self.crms[crm]
        except KeyError:
            known = ", ".join(sorted(self.crms)) or "none"
            raise ConfigurationError(
                f"table {self.table!r} has no columns for CRM {crm!r} (it has: {known}); "
                f"`crmsync schema` prints the SQL that adds them"
            ) from None

    def with_crms(self, crms: Iterable[str | AdapterSpec[Any]]) -> Layout:
        """The default layout extended with columns for more CRMs."""
        extra = Layout.default(crms, table=self.table).crms
        return replace(self, crms={**extra, **self.crms})
