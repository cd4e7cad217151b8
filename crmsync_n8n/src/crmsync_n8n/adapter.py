"""The n8n adapter: POSTs contacts to a Webhook node, one JSON object per contact by default.

Every request carries an ``Idempotency-Key`` header (see :func:`crmsync_n8n.mapping.idempotency_key`):
the same contact data gives the same key, so a workflow can drop a contact that arrives twice after an
ambiguous timeout. n8n lower-cases header names; a workflow reads it as
``{{ $json.headers['idempotency-key'] }}``.

Answers: any 2xx is acceptance (n8n's ``onReceived`` mode answers 200 before the workflow runs); the
remote id is the execution id when the workflow answers with one, else ``N8N_WORKFLOW_ID``. n8n never
adds an execution id by itself: in ``lastNode`` mode it answers the last node's first item, so the
workflow has to end with a node that sets ``executionId = {{ $execution.id }}`` (or a Respond to
Webhook node answering it); see ``docs/vendors/n8n.md``. 401/403 (credentials) and 404 (the
workflow is not active, or the path or method is wrong) stop the run; 413 splits an array in halves;
5xx, timeouts and connection errors are transient; any other 4xx is the workflow rejecting the data.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.check import CheckContext, CheckResult
from crmsync_core.contacts import (
    Contact,
    Outcome,
    PermanentFailure,
    Synced,
    TransientFailure,
    split_sendable,
)
from crmsync_core.errors import ConfigurationError, FatalError, TransientError
from crmsync_core.http import CrmClient

from .fake import make_sandbox
from .mapping import contact_payload, idempotency_key
from .settings import MAX_BATCH_SIZE, N8nSettings

#: the request header that carries the idempotency key
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: keys of a workflow's answer that hold the execution id, tried in this order
EXECUTION_ID_KEYS = ("executionId", "execution_id")
TEST_PATH = "/webhook-test/"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class N8nAdapter:
    """Sends contacts to one n8n Webhook node for one run."""

    def __init__(
        self,
        settings: N8nSettings,
        context: AdapterContext,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``clock`` gives the ``timestamp`` of each payload (aware UTC)."""
        self._url = _webhook_url(
            settings.webhook_url.get_secret_value() if settings.webhook_url else None
        )
        headers, auth, secrets = _credentials(settings)
        if TEST_PATH in self._url.path:
            context.logger.warning(
                "N8N_WEBHOOK_URL is an n8n test URL (%s): it only answers while someone listens in "
                "the n8n editor, for one call. Use the production URL (/webhook/...) and activate the "
                "workflow.",
                self._url.path,
            )
        self._settings = settings
        self._clock = clock
        self._array_size = settings.array_batch_size
        self._slots = asyncio.Semaphore(settings.sync_concurrency)
        self._client = CrmClient(
            context,
            crm="n8n",
            base_url="",
            headers={"Content-Type": "application/json", **headers},
            auth=auth,
            # The query string may hold a token; the path is shown in messages, never the query.
            secrets=[*secrets, self._url.query.decode("ascii", errors="replace")],
            auth_hint=_auth_hint(settings),
            timeout=settings.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"N8nAdapter(path={self._url.path!r}, auth={self._settings.webhook_auth!r})"

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        sendable, skipped = split_sendable(contacts)
        outcomes: list[Outcome] = list(skipped)
        size = self._array_size or 1
        groups = [sendable[start : start + size] for start in range(0, len(sendable), size)]
        for group_outcomes in await _all(
            [self._reported(self._deliver(group)) for group in groups]
        ):
            outcomes.extend(group_outcomes)
        return outcomes

    async def _reported(self, delivery: Coroutine[Any, Any, list[Outcome]]) -> list[Outcome]:
        outcomes = await delivery
        self._client.context.report(outcomes)
        return outcomes

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(
        self, group: list[Contact], sent_at: datetime
    ) -> dict[str, Any] | list[dict[str, Any]]:
        items = [
            contact_payload(c, sent_at=sent_at, extra_fields=self._settings.extra_fields)
            for c in group
        ]
        return items if self._array_size else items[0]

    async def _deliver(self, group: list[Contact]) -> list[Outcome]:
        def content() -> bytes:
            # Made when the request leaves (after the concurrency slot, the rate limiter and any
            # retry): ``timestamp`` is the time of sending, not of the batch's start.
            body = self._body(group, self._clock())
            return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

        # The key is blind to ``timestamp``: every send of this group carries the same one.
        key = idempotency_key(self._body(group, self._clock()))
        try:
            async with self._slots:
                response = await self._client.request(
                    "POST", str(self._url), content=content, headers={IDEMPOTENCY_HEADER: key}
                )
        except TransientError as exc:
            return [TransientFailure(c.id, exc.message, exc.retry_after) for c in group]

        status = response.status_code
        where = f"POST {self._url.path}"
        said = self._client.body_snippet(response)
        if 200 <= status < 300:
            remote_id = execution_id(response.content) or self._settings.workflow_id
            # With N8N_SYNC_CONFIRM the workflow's callback must carry this key.
            return [Synced(c.id, remote_id, idempotency_key=key) for c in group]
        if status == 404:
            raise FatalError(
                f"n8n: HTTP 404 on {where}: {_not_found_hint(self._url)} "
                f"n8n said: {self._n8n_error(response) or said}"
            )
        if status == 413:
            if len(group) > 1:
                half = len(group) // 2
                halves = await _all([self._deliver(group[:half]), self._deliver(group[half:])])
                return [outcome for outcomes in halves for outcome in outcomes]
            reason = (
                f"n8n: HTTP 413 on {where}: the contact alone is larger than n8n accepts "
                f"(N8N_PAYLOAD_SIZE_MAX on the n8n server): {said}"
            )
            return [PermanentFailure(group[0].id, reason)]
        if 300 <= status < 400:
            raise FatalError(
                f"n8n: HTTP {status} on {where} redirects to "
                f"{httpx.URL(response.headers.get('location', '')).path or '(nowhere)'}: "
                "set N8N_WEBHOOK_URL to the final URL (crmsync does not follow redirects with a POST)"
            )
        # Another 4xx comes from the workflow itself (a Respond to Webhook node): it rejected the data.
        reason = f"n8n: HTTP {status} on {where}: {said}"
        return [PermanentFailure(c.id, reason) for c in group]

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
        return self._client.redact(" ".join(parts)[:1000])


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


async def _all(
    coroutines: list[Coroutine[Any, Any, list[Outcome]]],
) -> list[list[Outcome]]:
    """Run ``coroutines`` at once; when one fails, raise its error (a :class:`FatalError` first) once the
    others return. They are not cancelled: a request already sent may have been accepted, and what n8n
    accepted must be recorded, not sent again."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise next((e for e in failed if isinstance(e, FatalError)), failed[0])
    return [r for r in results if not isinstance(r, BaseException)]


def _webhook_url(value: str | None) -> httpx.URL:
    if not value or not value.strip():
        raise ConfigurationError(
            "set N8N_WEBHOOK_URL to the production URL of the n8n Webhook node "
            "(https://<host>/webhook/<path>)"
        )
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL:
        url = httpx.URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            "N8N_WEBHOOK_URL must be an http(s) URL such as https://<host>/webhook/<path>"
        )
    return url


def _credentials(
    settings: N8nSettings,
) -> tuple[dict[str, str], httpx.Auth | None, list[str]]:
    """Headers, auth and the secret values to redact, for the configured auth mode."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    mode = settings.webhook_auth
    if mode == "bearer":
        return ({"Authorization": f"Bearer {secret}"} if secret else {}), None, [secret]
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
        return {name: secret}, None, [secret]
    user = settings.webhook_user or ""
    if not user:
        raise ConfigurationError(
            "N8N_WEBHOOK_AUTH=basic needs N8N_WEBHOOK_USER: set it to the user of the Webhook "
            "node's Basic Auth credential"
        )
    token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return {}, httpx.BasicAuth(user, secret), [secret, token]


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


def _factory(settings: N8nSettings, context: AdapterContext) -> N8nAdapter:
    return N8nAdapter(settings, context)


async def _check(settings: N8nSettings, context: CheckContext) -> list[CheckResult]:
    from .account import check

    return await check(settings, context)


SPEC: AdapterSpec[N8nSettings] = AdapterSpec(
    name="n8n",
    settings_model=N8nSettings,
    factory=_factory,
    max_batch_size=MAX_BATCH_SIZE,
    # n8n has no built-in rate limit; set N8N_SYNC_RATE_LIMIT_* if a proxy in front of it has one.
    rate_limit=None,
    partial_success=True,
    remote_id_column="n8n_workflow_id",
    sandbox=make_sandbox,
    check=_check,
    description="posts contacts to an n8n Webhook node (ScraperSky's payload)",
)
