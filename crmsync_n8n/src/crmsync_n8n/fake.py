"""A fake n8n instance with one Webhook node, for the tests, the demo and the benchmarks.

It answers like n8n's Webhook node (n8n 1.x): the production URL ``/webhook/<path>`` while the workflow
is active, the test URL ``/webhook-test/<path>`` for one call after :meth:`FakeN8n.listen`, 404
``"The requested webhook ... is not registered."`` otherwise; Basic Auth answers 401 without and 403 with
wrong credentials, Header Auth 403; ``onReceived`` answers 200 ``{"message": "Workflow was started"}``
at once, ``lastNode`` answers with the JSON of the last node's first item, or 500 when the workflow fails.
What that item holds is the workflow's business: by default the fake's workflow is the Webhook node
alone, so it answers the Webhook node's item (no execution id); ``last_node="execution_id"`` is a workflow
that ends with a Set node ``executionId = {{ $execution.id }}`` (how to get the execution id as the remote
id), ``last_node="execution_and_workflow"`` one that also adds ``workflowId``. Bodies larger than ``max_payload_bytes`` (n8n's ``N8N_PAYLOAD_SIZE_MAX``, 16 MiB) get 413.
With ``callback_url`` set, the workflow ends with an HTTP Request node that calls crmsync back
(confirmed delivery): after accepting a request it posts, per contact, ``{"contact_id", "idempotency_key",
"status": "ok" | "error", "error", "data"}`` with ``Authorization: Bearer <callback_secret>``, or posts
nothing, as ``callback_script`` says (one entry per contact, then ``callback_default``); the answers are in
``callbacks``. :meth:`FakeN8n.settle` waits for the callbacks in flight.
n8n itself has no rate limit: :class:`~crmsync_core.adapter.SandboxOptions.rate_limit` plays a reverse
proxy in front of it (429 with ``Retry-After``), and injected failures are a proxy's 503.

Every behaviour, its source in n8n's documentation or code and whether it is confirmed:
``docs/vendors/n8n.md``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import Bucket, RateLimit, RateLimits
from crmsync_core.settings import SecretUrl
from crmsync_core.testing.fakecrm import FakeCrm, respond

from .settings import N8nSettings

SANDBOX_URL = "https://n8n.sandbox.invalid"
SANDBOX_PATH = "scrapersky-contacts"
SANDBOX_SECRET = "sandbox-n8n-webhook-secret"  # noqa: S105 (the fake's own, public credential)
SANDBOX_WORKFLOW_ID = "wf-scrapersky-contacts"
#: a token in the sandbox's webhook URL (the fake ignores it): the contract tests check it never shows
SANDBOX_URL_TOKEN = "sandbox-n8n-url-token"  # noqa: S105 (the fake's own, public credential)
PAYLOAD_SIZE_MAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """One request the Webhook node accepted: what a workflow sees as ``$json``."""

    execution_id: str
    path: str
    #: header names lower-cased, as n8n gives them to the workflow
    headers: dict[str, str]
    body: Any

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class FakeN8n(FakeCrm):
    """An n8n instance with one workflow whose Webhook node listens for POSTs on ``path``."""

    path: str = SANDBOX_PATH
    #: the node's authentication: ``header`` is Header Auth (name and value must match exactly)
    auth: Literal["none", "header", "basic"] = "none"
    header_name: str = "Authorization"
    header_value: str = ""
    user: str = ""
    password: str = ""
    response_mode: Literal["onReceived", "lastNode"] = "onReceived"
    #: production URLs answer only while the workflow is active
    active: bool = True
    #: in ``lastNode`` mode, the workflow fails (500) instead of answering
    workflow_fails: bool = False
    #: in ``lastNode`` mode, what the workflow's last node outputs (see the module docstring)
    last_node: Literal["webhook", "execution_id", "execution_and_workflow"] = "webhook"
    workflow_id: str = SANDBOX_WORKFLOW_ID
    max_payload_bytes: int = PAYLOAD_SIZE_MAX
    #: share of requests a proxy in front of n8n answers with 503
    failure_rate: float = 0.0
    #: requests per period a proxy in front of n8n lets through before answering 429
    rate_limit: RateLimit | None = None
    seed: int = 0
    received: list[Received] = field(default_factory=list)
    #: the contacts the workflow holds, by ``contact_id`` (an array is split, like a Split Out node)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: requests whose idempotency key had been seen before (what a de-duplicating workflow drops)
    duplicates: int = 0
    #: confirmed delivery: the URL the workflow's last node posts each contact's result to
    callback_url: str | None = None
    callback_secret: str = ""
    #: how the callback reaches crmsync (e.g. ``httpx.ASGITransport(app)``); default: the network
    callback_transport: httpx.AsyncBaseTransport | None = None
    #: per contact in order: ``ok``, ``error`` or ``none`` (no callback); then ``callback_default``
    callback_script: list[Literal["ok", "error", "none"]] = field(default_factory=list)
    callback_default: Literal["ok", "error", "none"] = "ok"
    #: the ``data`` of a success callback for a contact's item (the workflow's enrichment results)
    callback_data: Callable[[dict[str, Any]], Any] | None = None
    #: the callbacks are made before the Webhook node answers (a ``lastNode`` workflow whose last node
    #: calls back), so they reach crmsync before it records the acceptance
    callback_before_answer: bool = False
    #: what was posted back: (body, HTTP status of crmsync's answer, its ``result``)
    callbacks: list[tuple[dict[str, Any], int, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        FakeCrm.__init__(self, failure_rate=self.failure_rate, seed=self.seed)
        self._listening = False
        self._keys: set[str] = set()
        self._executions = 0
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def requests(self) -> int:
        """How many requests reached the fake, accepted or not."""
        return len(self.log)

    @classmethod
    def with_bearer(cls, secret: str, **options: Any) -> FakeN8n:
        """Header Auth with name ``Authorization`` and value ``Bearer <secret>`` (ScraperSky's setup)."""
        return cls(auth="header", header_value=f"Bearer {secret}", **options)

    def listen(self) -> None:
        """Click "Listen for test event": the test URL answers the next call, once."""
        self._listening = True

    async def settle(self) -> None:
        """Wait until every callback the workflows started has been answered."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _call_back(self, item: dict[str, Any], key: str | None) -> None:
        action = self.callback_script.pop(0) if self.callback_script else self.callback_default
        if action == "none" or self.callback_url is None:
            return
        body: dict[str, Any] = {
            "contact_id": str(item.get("contact_id")),
            "idempotency_key": key,
            "status": action,
        }
        if action == "error":
            body["error"] = "enrichment provider timed out"
        elif self.callback_data is not None:
            body["data"] = self.callback_data(item)
        task = asyncio.get_running_loop().create_task(self._post_callback(body))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _post_callback(self, body: dict[str, Any]) -> None:
        assert self.callback_url is not None
        async with httpx.AsyncClient(transport=self.callback_transport) as client:
            response = await client.post(
                self.callback_url,
                json=body,
                headers={"Authorization": f"Bearer {self.callback_secret}"},
            )
        try:
            result = response.json().get("result")
        except (ValueError, AttributeError):
            result = None
        self.callbacks.append((body, response.status_code, result))

    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        return RateLimits.single(self.rate_limit, name="proxy").buckets

    async def answer(self, request: httpx.Request) -> httpx.Response:
        _, full = self.take_budget(request)
        if full is not None:
            return httpx.Response(
                429,
                headers={"Retry-After": str(math.ceil(full.reset))},
                text="Too Many Requests",
            )
        if self.injected_failure():
            return httpx.Response(
                503,
                headers={"Content-Type": "text/html"},
                text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            )
        if request.method == "OPTIONS":
            return self._options(request)
        route = self._route(request)
        if isinstance(route, httpx.Response):
            return route
        refused = self._check_auth(request)
        if refused is not None:
            return refused
        if len(request.content) > self.max_payload_bytes:
            # UNCONFIRMED: n8n's exact 413 body; the status is what its body parser answers.
            return respond(413, {"code": 413, "message": "request entity too large"})
        response = self._run(route, request)
        if self.callback_before_answer:
            await self.settle()
        return response

    # -- n8n's behaviour ----------------------------------------------------------------------------

    def _route(self, request: httpx.Request) -> str | httpx.Response:
        path = request.url.path
        for prefix, live in (("/webhook/", self.active), ("/webhook-test/", self._listening)):
            if path == f"{prefix}{self.path}" and live:
                if request.method != "POST":
                    return respond(
                        404,
                        {
                            "code": 404,
                            "message": f"This webhook is not registered for {request.method} "
                            "requests. Did you mean to make a POST request?",
                        },
                    )
                if prefix == "/webhook-test/":
                    self._listening = False
                return path
        test = path.startswith("/webhook-test/")
        webhook = path.split("/", 2)[-1] if path.count("/") >= 2 else path
        hint = (
            "Click the 'Execute workflow' button on the canvas, then try again. (In test mode, "
            "the webhook only works for one call after you click this button)"
            if test
            else "The workflow must be active for a production URL to run successfully. You can "
            "activate the workflow using the toggle in the top-right of the editor."
        )
        return respond(
            404,
            {
                "code": 404,
                "message": f'The requested webhook "{request.method} {webhook}" is not registered.',
                "hint": hint,
            },
        )

    def _options(self, request: httpx.Request) -> httpx.Response:
        """n8n's answer to ``OPTIONS`` (the ``crmsync check`` probe): 204, and with an ``Origin`` header
        the methods registered for the path in ``Access-Control-Allow-Methods`` (n8n source,
        webhook-request-handler.ts ``setupCorsHeaders``). The workflow never runs."""
        if "origin" not in request.headers:
            return httpx.Response(204)
        path = request.url.path
        live = (path == f"/webhook/{self.path}" and self.active) or (
            path == f"/webhook-test/{self.path}" and self._listening
        )
        methods = ["OPTIONS", "POST"] if live else ["OPTIONS"]
        return httpx.Response(
            204,
            headers={
                "Access-Control-Allow-Methods": ", ".join(methods),
                "Access-Control-Allow-Origin": request.headers["origin"],
            },
        )

    def _check_auth(self, request: httpx.Request) -> httpx.Response | None:
        if self.auth == "none":
            return None
        if self.auth == "header":
            if request.headers.get(self.header_name) != self.header_value:
                return _auth_error(403)
            return None
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "basic" or not token:
            return _auth_error(401)
        try:
            user, _, password = base64.b64decode(token).decode().partition(":")
        except ValueError:
            return _auth_error(403)
        if (user, password) != (self.user, self.password):
            return _auth_error(403)
        return None

    def _run(self, path: str, request: httpx.Request) -> httpx.Response:
        self._executions += 1
        execution_id = str(self._executions)
        try:
            body: Any = json.loads(request.content) if request.content else {}
        except ValueError:
            body = request.content.decode("utf-8", errors="replace")
        headers = {name.lower(): value for name, value in request.headers.items()}
        received = Received(execution_id, path, headers, body)
        self.received.append(received)
        key = received.idempotency_key
        if key is not None:
            if key in self._keys:
                self.duplicates += 1
            self._keys.add(key)
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and "contact_id" in item:
                self.contacts[str(item["contact_id"])] = item
                if self.callback_url is not None and not self.workflow_fails:
                    # The workflow runs after the answer; its last node calls back.
                    self._call_back(item, key)
        if self.response_mode == "onReceived":
            return respond(200, {"message": "Workflow was started"})
        if self.workflow_fails:
            # UNCONFIRMED: n8n's exact body when a lastNode workflow fails; the status is 500.
            return respond(500, {"code": 0, "message": "Error in workflow"})
        if self.last_node == "execution_id":
            return respond(200, {"executionId": execution_id})
        if self.last_node == "execution_and_workflow":
            return respond(200, {"executionId": execution_id, "workflowId": self.workflow_id})
        # The Webhook node's own item. ASSUMED field set (n8n 1.x's Webhook node output).
        return respond(
            200,
            {
                "headers": headers,
                "params": {},
                "query": dict(request.url.params),
                "body": body,
                "webhookUrl": str(request.url.copy_with(query=None)),
                "executionMode": "test" if path.startswith("/webhook-test/") else "production",
            },
        )


def _auth_error(status: int) -> httpx.Response:
    message = "Authorization is required!" if status == 401 else "Authorization data is wrong!"
    return httpx.Response(
        status, headers={"WWW-Authenticate": 'Basic realm="Webhook"'}, text=message
    )


def make_sandbox(options: SandboxOptions) -> Sandbox[N8nSettings]:
    """A :class:`FakeN8n` behind Header Auth ``Authorization: Bearer <secret>``, and settings for it."""
    fake = FakeN8n.with_bearer(
        SANDBOX_SECRET,
        failure_rate=options.failure_rate,
        rate_limit=options.rate_limit,
        seed=options.seed,
    )
    settings = N8nSettings(
        webhook_url=SecretUrl(f"{SANDBOX_URL}/webhook/{SANDBOX_PATH}?token={SANDBOX_URL_TOKEN}"),
        webhook_secret=SecretStr(SANDBOX_SECRET),
        webhook_auth="bearer",
        workflow_id=SANDBOX_WORKFLOW_ID,
    )
    return Sandbox(settings=settings, transport=fake.transport(), fake=fake)
