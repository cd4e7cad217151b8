"""The n8n adapter: POSTs contacts to a Webhook node, one JSON object per contact by default.

Every request carries an ``Idempotency-Key`` header (see :func:`crmsync_n8n.mapping.idempotency_key`):
the same contact data gives the same key, so a workflow can drop a contact that arrives twice after an
ambiguous timeout. n8n lower-cases header names; a workflow reads it as
``{{ $json.headers['idempotency-key'] }}``.

Answers: any 2xx is acceptance (n8n's ``onReceived`` mode answers 200 before the workflow runs); the
remote id is the execution id when the workflow answers with one, else ``N8N_WORKFLOW_ID``. n8n never
adds an execution id by itself: in ``lastNode`` mode it answers the last node's first item, so the
workflow has to end with a node that sets ``executionId = {{ $execution.id }}`` (or a Respond to
Webhook node answering it); see ``docs/vendors/n8n.md``. 401/403 (credentials) and 404/405 (the
workflow is not active, or the path or method is wrong) stop the run; 413 splits an array in halves;
5xx, timeouts and connection errors are transient; any other 4xx is the workflow rejecting the data.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.contacts import Contact, Outcome, PermanentFailure, Synced
from crmsync_core.errors import ConfigurationError, FatalError
from crmsync_core.sdk import BatchAdapter, Sent, checked_base_url, json_bytes

from .mapping import contact_payload, format_timestamp, idempotency_key
from .settings import MAX_BATCH_SIZE, N8nSettings

#: the request header that carries the idempotency key
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: keys of a workflow's answer that hold the execution id, tried in this order
EXECUTION_ID_KEYS = ("executionId", "execution_id")
TEST_PATH = "/webhook-test/"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class N8nAdapter(BatchAdapter[N8nSettings]):
    """Sends contacts to one n8n Webhook node for one run."""

    crm = "n8n"
    path = ""
    base_url_setting = "N8N_WEBHOOK_URL"
    base_url_example = "https://<host>/webhook/<path> (the Webhook node's production URL)"
    # 413: the array is larger than the server takes; halves are sent until each contact is alone.
    batch_rejections = frozenset({413})
    bisect_rejections = True

    def __init__(
        self,
        settings: N8nSettings,
        context: AdapterContext,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``clock`` gives the ``timestamp`` of each payload (aware UTC)."""
        self._clock = clock
        super().__init__(settings, context)
        self._url = webhook_url(settings)
        if TEST_PATH in self._url.path:
            context.logger.warning(
                "N8N_WEBHOOK_URL is an n8n test URL (%s): it only answers while someone listens in "
                "the n8n editor, for one call. Use the production URL (/webhook/...) and activate the "
                "workflow.",
                self._url.path,
            )

    def __repr__(self) -> str:
        return f"N8nAdapter(path={self._url.path!r}, auth={self.settings.webhook_auth!r})"

    # -- what the SDK asks --------------------------------------------------------------------------

    def base_url_value(self) -> str | None:
        url = self.settings.webhook_url
        return url.get_secret_value() if url else None

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **_credentials(self.settings)[0]}

    def secrets(self) -> list[str]:
        return _credentials(self.settings)[1]

    def auth_hint(self) -> str:
        return _auth_hint(self.settings)

    def item_key(self, contact: Contact) -> str:
        return str(contact.id)  # every row is its own delivery: the workflow decides about e-mails

    def request_size(self) -> int:
        return self.settings.array_batch_size or 1

    def bisection_budget(self) -> int:
        return 2 * self.request_size()  # enough to split any array down to single contacts

    def item(self, contact: Contact) -> dict[str, Any]:
        return contact_payload(
            contact, sent_at=self._clock(), extra_fields=self.settings.extra_fields
        )

    def body(self, items: Sequence[Any]) -> Any:
        return list(items) if self.settings.array_batch_size else items[0]

    async def send(self, body: Any) -> httpx.Response:
        def content() -> bytes:
            # Made when the request leaves (after the concurrency slot, the rate limiter and any
            # retry): ``timestamp`` is the time of sending, not of the batch's start.
            return json_bytes(_stamped(body, format_timestamp(self._clock())))

        # The key is blind to ``timestamp``: every send of this body carries the same one.
        return await self.client.request(
            "POST",
            str(self._url),
            content=content,
            headers={IDEMPOTENCY_HEADER: idempotency_key(body)},
        )

    def outcomes(self, response: httpx.Response, sent: Sequence[Sent]) -> list[Outcome]:
        status = response.status_code
        if 200 <= status < 300:
            remote_id = execution_id(response.content) or self.settings.workflow_id
            # With N8N_SYNC_CONFIRM the workflow's callback must carry the request's key.
            key = _sent_key(response)
            return [Synced(s.contact.id, remote_id, idempotency_key=key) for s in sent]
        if 300 <= status < 400:
            raise FatalError(
                f"n8n: HTTP {status} on {self._where} redirects to "
                f"{httpx.URL(response.headers.get('location', '')).path or '(nowhere)'}: "
                "set N8N_WEBHOOK_URL to the final URL (crmsync does not follow redirects with a POST)"
            )
        # Another 4xx comes from the workflow itself (a Respond to Webhook node): it rejected the data.
        reason = f"n8n: HTTP {status} on {self._where}: {self.client.body_snippet(response)}"
        return [PermanentFailure(s.contact.id, reason) for s in sent]

    def item_rejected(self, item: Sent, reason: str) -> Outcome:
        return PermanentFailure(
            item.contact.id,
            f"n8n: {reason} on {self._where}: the contact alone is larger than n8n accepts "
            "(N8N_PAYLOAD_SIZE_MAX on the n8n server)",
        )

    def not_found(self, response: httpx.Response) -> FatalError:
        return FatalError(
            f"n8n: HTTP {response.status_code} on {self._where}: {_not_found_hint(self._url)} "
            f"n8n said: {self._n8n_error(response) or self.client.body_snippet(response)}"
        )

    @property
    def _where(self) -> str:
        return f"POST {self._url.path}"

    def _n8n_error(self, response: httpx.Response) -> str | None:
        """n8n's ``message`` and ``hint`` in full (redacted): the hint says what to do, and a snippet
        of the body would cut it short."""
        try:
            body = json.loads(response.content)
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return None
        parts = [body["message"].strip()]
        if isinstance(body.get("hint"), str) and body["hint"].strip():
            parts.append(body["hint"].strip())
        return self.client.redact(" ".join(parts)[:1000])


def webhook_url(settings: N8nSettings) -> httpx.URL:
    """``N8N_WEBHOOK_URL`` as given (the SDK's base URL drops a trailing slash), once checked."""
    value = settings.webhook_url.get_secret_value() if settings.webhook_url else None
    checked_base_url(
        value, crm="n8n", setting=N8nAdapter.base_url_setting, example=N8nAdapter.base_url_example
    )
    return httpx.URL(str(value).strip())


def _stamped(body: Any, timestamp: str) -> Any:
    """``body`` (an object or an array of them) with ``timestamp`` in each object, in its place."""
    if isinstance(body, list):
        return [_stamped(item, timestamp) for item in body]
    return {**body, "timestamp": timestamp}


def _sent_key(response: httpx.Response) -> str | None:
    """The ``Idempotency-Key`` the answered request carried."""
    try:
        key: str | None = response.request.headers.get(IDEMPOTENCY_HEADER)
    except RuntimeError:  # a response built without its request
        return None
    return key


def execution_id(content: bytes) -> str | None:
    """The execution id in a workflow's answer (an object, or a list whose first item has it)."""
    try:
        answer = json.loads(content)
    except ValueError:
        return None
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict):
        return None
    for key in EXECUTION_ID_KEYS:
        value = answer.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _credentials(
    settings: N8nSettings,
) -> tuple[dict[str, str], list[str]]:
    """Headers and the secret values to redact, for the configured auth mode."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    mode = settings.webhook_auth
    if mode == "bearer":
        return ({"Authorization": f"Bearer {secret}"} if secret else {}), [secret]
    if not secret:
        raise ConfigurationError(
            f"N8N_WEBHOOK_AUTH={mode} needs N8N_WEBHOOK_SECRET: set it to the "
            f"{'Header Auth value' if mode == 'header' else 'Basic Auth password'} "
            "of the Webhook node's credential"
        )
    if mode == "header":
        name = (settings.webhook_auth_header or "").strip()
        if not name:
            raise ConfigurationError(
                "N8N_WEBHOOK_AUTH=header needs N8N_WEBHOOK_AUTH_HEADER: set it to the header name "
                "of the Webhook node's Header Auth credential"
            )
        return {name: secret}, [secret]
    user = settings.webhook_user or ""
    if not user:
        raise ConfigurationError(
            "N8N_WEBHOOK_AUTH=basic needs N8N_WEBHOOK_USER: set it to the user of the Webhook "
            "node's Basic Auth credential"
        )
    token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}, [secret, token]


def _auth_hint(settings: N8nSettings) -> str:
    if settings.webhook_auth == "header":
        return (
            "set N8N_WEBHOOK_AUTH_HEADER and N8N_WEBHOOK_SECRET to the name and value of the "
            "Webhook node's Header Auth credential"
        )
    if settings.webhook_auth == "basic":
        return (
            "set N8N_WEBHOOK_USER and N8N_WEBHOOK_SECRET to the user and password of the Webhook "
            "node's Basic Auth credential"
        )
    if settings.webhook_secret is None:
        return (
            "the Webhook node requires authentication: set N8N_WEBHOOK_SECRET "
            "(and N8N_WEBHOOK_AUTH when it is not Header Auth with name Authorization)"
        )
    return (
        "check N8N_WEBHOOK_SECRET: the Webhook node's Header Auth credential must have the name "
        "Authorization and the value 'Bearer <N8N_WEBHOOK_SECRET>'"
    )


def _not_found_hint(url: httpx.URL) -> str:
    if TEST_PATH in url.path:
        return (
            "no one is listening on this n8n test URL (it answers only while the editor listens, "
            "for one call): set N8N_WEBHOOK_URL to the production URL (/webhook/...) and activate "
            "the workflow."
        )
    return (
        "the workflow is not active, or N8N_WEBHOOK_URL does not match the Webhook node's path "
        "and method (POST): activate the workflow in n8n and copy its production URL."
    )


SPEC: AdapterSpec[N8nSettings] = AdapterSpec(
    name="n8n",
    settings_model=N8nSettings,
    factory=N8nAdapter,
    max_batch_size=MAX_BATCH_SIZE,
    # n8n has no built-in rate limit; set N8N_SYNC_RATE_LIMIT_* if a proxy in front of it has one.
    rate_limit=None,
    partial_success=True,
    remote_id_column="n8n_workflow_id",
    sandbox="crmsync_n8n.fake:make_sandbox",
    check="crmsync_n8n.account:check",
    description="posts contacts to an n8n Webhook node (ScraperSky's payload)",
)
