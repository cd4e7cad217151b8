"""Contact filters compiled to SQL conditions."""

from __future__ import annotations

import sqlalchemy as sa

from ..errors import InvalidRequestError
from ..filters import ContactFilter
from .base import StoreBase, _coerce_id, _python_type


class FiltersMixin(StoreBase):
    def _filter_clause(self, crm: str, f: ContactFilter) -> sa.ColumnElement[bool]:
        c = self._crm(crm)
        col = self.table.c
        fields = self.layout.fields
        conditions: list[sa.ColumnElement[bool]] = []
        if f.curation_status is not None:
            if not self.layout.curation_status:
                raise InvalidRequestError("this contacts table has no curation status to filter on")
            conditions.append(col[self.layout.curation_status] == f.curation_status)
        if f.processing_status is not None:
            conditions.append(
                c.processing.is_(None)
                if f.processing_status == "none"
                else c.processing == f.processing_status
            )
        if f.sync_status is not None:
            conditions.append(c.sync == f.sync_status.value)
        if f.email_type is not None:
            conditions.append(col[fields["email_type"]] == f.email_type.value)
        for name in ("domain_id", "page_id"):
            value = getattr(f, name)
            if value is not None:
                column = col[fields[name]]
                conditions.append(column == _coerce_id(value, _python_type(column), name))
        if f.email_contains is not None:
            conditions.append(col[fields["email"]].icontains(f.email_contains, autoescape=True))
        if f.name_contains is not None:
            conditions.append(col[fields["name"]].icontains(f.name_contains, autoescape=True))
        if f.has_gmail is not None:
            conditions.append(col[fields["has_gmail"]] == f.has_gmail)
        return sa.and_(sa.true(), *conditions)
