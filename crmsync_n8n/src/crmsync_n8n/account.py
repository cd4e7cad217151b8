"""Is the n8n webhook ready (``crmsync check``)? A probe that never runs the workflow.

n8n answers an ``OPTIONS`` request on a webhook path without executing anything, and when the request
carries an ``Origin`` header it first looks up the methods registered for that path and lists them in
``Access-Control-Allow-Methods`` (n8n source: ``webhook-request-handler.ts`` ``setupCorsHeaders`` calls
``getWebhookMethods(path)``, which reads the webhooks of *active* workflows; the ``OPTIONS`` answer is
204 and the workflow is not started). Without ``Access-Control-Request-Method`` the node's CORS options
are not consulted, so the probe works whatever the node allows. So:

* ``POST`` among the listed methods: the production URL is registered and its workflow is active;
* only ``OPTIONS``: nothing is registered there (inactive workflow, wrong path, or a test URL);
* no such header (an older n8n, or a proxy that answers ``OPTIONS`` itself): the probe cannot tell, and
  the check says so plainly rather than sending a contact.

What cannot be checked without running the workflow: the node's credentials (Header or Basic auth is
verified by the Webhook node while it executes). Verified against n8n's source, not a live n8n here.
n8n reports no rate limit.
"""

from __future__ import annotations

import httpx

from crmsync_core.adapter import AdapterContext
from crmsync_core.check import CheckContext, CheckResult
from crmsync_core.errors import TransientError
from crmsync_core.http import CrmClient, url_secrets

from .settings import N8nSettings


async def check(settings: N8nSettings, context: CheckContext) -> list[CheckResult]:
    """The n8n part of ``crmsync check``; sends one ``OPTIONS`` request and no contact."""
    if context.scope == "fields":
        return []  # n8n receives whatever is sent: there are no fields to check
    from .adapter import TEST_PATH, _credentials, webhook_url

    url = webhook_url(settings)
    _, secrets = _credentials(settings)  # refuses an incomplete auth setting, like a sync would
    results = [CheckResult("settings", "ok", f"webhook path {url.path}")]
    if TEST_PATH in url.path:
        results.append(
            CheckResult(
                "webhook",
                "problem",
                "N8N_WEBHOOK_URL is a test URL (/webhook-test/): it answers only while the editor "
                "listens, for one call",
                fix="use the production URL (/webhook/...) and activate the workflow",
            )
        )
        return results
    client = CrmClient(
        AdapterContext(
            rate_limiter=context.rate_limiter,
            request_retry=context.request_retry,
            transport=context.transport,
            logger=context.logger,
        ),
        crm="n8n",
        base_url="",
        secrets=[*secrets, *url_secrets(url)],
        auth_hint="the probe sends no credentials",
        timeout=settings.timeout_seconds,
    )
    origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
    async with client:
        try:
            response = await client.request("OPTIONS", str(url), headers={"Origin": origin})
        except TransientError as exc:
            results.append(CheckResult("webhook", "problem", f"n8n did not answer: {exc.message}"))
            return results
    results.append(_webhook_result(response))
    results.append(
        CheckResult(
            "credentials",
            "info",
            "not checkable without running the workflow (the Webhook node verifies them as it runs)",
        )
    )
    results.append(CheckResult("rate limit", "info", "n8n has none"))
    return results


def _webhook_result(response: httpx.Response) -> CheckResult:
    allowed = response.headers.get("access-control-allow-methods")
    if response.status_code >= 400 or allowed is None:
        return CheckResult(
            "webhook",
            "info",
            f"the OPTIONS probe could not tell (HTTP {response.status_code}"
            f"{', no Access-Control-Allow-Methods' if allowed is None else ''}); no safe probe is "
            "left, so the first sync will tell",
        )
    methods = {m.strip().upper() for m in allowed.split(",") if m.strip()}
    if "POST" in methods:
        return CheckResult("webhook", "ok", "registered for POST: the workflow is active")
    return CheckResult(
        "webhook",
        "problem",
        "no active workflow listens for POST at this URL"
        + (
            f" (registered: {', '.join(sorted(methods - {'OPTIONS'}))})"
            if methods - {"OPTIONS"}
            else ""
        ),
        fix="activate the workflow in n8n, and copy its Webhook node's production URL into "
        "N8N_WEBHOOK_URL (HTTP method POST)",
    )
