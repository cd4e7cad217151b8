"""Settings of the n8n adapter (environment prefix ``N8N_``)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from crmsync_core.settings import SecretUrl, SyncSettings

from .mapping import EXTRA_FIELDS

#: the most contacts one push (and so one JSON array) may carry
MAX_BATCH_SIZE = 50


class N8nSettings(SyncSettings):
    """Where the n8n Webhook node listens, how it authenticates, and what it is sent.

    ``N8N_WEBHOOK_URL`` is the only required setting. Everything else defaults to what ScraperSky sends
    today: one JSON object per contact, ``Authorization: Bearer $N8N_WEBHOOK_SECRET`` when a secret is set,
    and a 30 s timeout.
    """

    model_config = SettingsConfigDict(env_prefix="N8N_", extra="ignore")

    #: the Webhook node's production URL, ``https://<host>/webhook/<path>``; it may carry a token
    #: (``?token=...``), so it is a :class:`~crmsync_core.settings.SecretUrl`: its query never shows
    webhook_url: SecretUrl | None = None
    #: the bearer token, Header Auth value or Basic password, depending on ``webhook_auth``
    webhook_secret: SecretStr | None = None
    #: ``bearer``: ``Authorization: Bearer <secret>`` (ScraperSky's header, n8n's Header Auth with name
    #: ``Authorization`` and value ``Bearer <secret>``); ``header``: ``<webhook_auth_header>: <secret>``;
    #: ``basic``: HTTP Basic with ``webhook_user`` and the secret as password
    webhook_auth: Literal["bearer", "header", "basic"] = "bearer"
    #: the header name of the node's Header Auth credential (``webhook_auth=header``)
    webhook_auth_header: str | None = None
    #: the user of the node's Basic Auth credential (``webhook_auth=basic``)
    webhook_user: str | None = None
    #: seconds to wait for n8n to answer one request
    timeout_seconds: float = Field(30.0, gt=0)
    #: contact fields sent besides ScraperSky's six, e.g. ``phone_number,source_url``
    extra_fields: Annotated[tuple[str, ...], NoDecode] = ()
    #: opt-in batch mode: post JSON arrays of up to this many contacts instead of one object each.
    #: n8n turns an array into one item: the workflow must split it (Split Out node).
    array_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    #: stored as the remote id when the workflow does not answer with an execution id
    workflow_id: str | None = None

    @field_validator("extra_fields", mode="before")
    @classmethod
    def _split_fields(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("extra_fields")
    @classmethod
    def _known_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(name not in EXTRA_FIELDS for name in value):
            raise ValueError(f"unknown contact field; choose from {', '.join(EXTRA_FIELDS)}")
        return tuple(dict.fromkeys(value))
