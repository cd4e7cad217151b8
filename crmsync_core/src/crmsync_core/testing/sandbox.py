"""A CRM that lives in memory: the adapter the demo falls back to, and the zero-latency benchmark target."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from ..adapter import AdapterContext, AdapterSpec, Sandbox, SandboxOptions
from ..contacts import (
    Contact,
    Outcome,
    PermanentFailure,
    Skipped,
    Synced,
    TransientFailure,
    invalid_email_reason,
)
from ..errors import AuthenticationError
from ..ratelimit import RateLimit
from ..settings import SyncSettings


class SandboxSettings(SyncSettings):
    """Settings of the sandbox adapter (environment prefix ``SANDBOX_``)."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore")

    api_key: SecretStr | None = SecretStr("sandbox-secret-key")


@dataclass
class SandboxCrm:
    """The remote side: what it holds, how it misbehaves."""

    api_key: str = "sandbox-secret-key"
    latency_seconds: float = 0.0
    #: share of contacts answered with a transient failure
    failure_rate: float = 0.0
    #: e-mails at this domain are rejected for good, like a CRM's validation error
    rejected_domain: str = "rejected.invalid"
    seed: int = 0
    #: keep what it receives (for inspection); a benchmark turns this off to measure crmsync, not the fake
    remember: bool = True
    contacts: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def upsert(self, email: str) -> str:
        key = email.strip().lower()
        if not self.remember:
            return str(zlib.crc32(key.encode()))
        if key not in self.contacts:
            self.contacts[key] = str(len(self.contacts) + 1)
        return self.contacts[key]

    def should_fail(self) -> bool:
        return self.failure_rate > 0 and self._rng.random() < self.failure_rate


class SandboxAdapter:
    """Pushes to a :class:`SandboxCrm`: one "request" per batch, through the run's rate limiter."""

    def __init__(self, crm: SandboxCrm, settings: SandboxSettings, context: AdapterContext) -> None:
        self._crm = crm
        self._settings = settings
        self._context = context

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        key = self._settings.api_key.get_secret_value() if self._settings.api_key else ""
        if key != self._crm.api_key:
            raise AuthenticationError("sandbox refused the credentials: set SANDBOX_API_KEY")
        await self._context.rate_limiter.acquire()
        self._crm.requests += 1
        if self._crm.remember:
            self._crm.batch_sizes.append(len(contacts))
        if self._crm.latency_seconds:
            await asyncio.sleep(self._crm.latency_seconds)
        if self._context.on_response is not None:
            # One simulated exchange per batch, answered 200 with a result per contact.
            self._context.on_response(200, self._crm.latency_seconds)
        outcomes: list[Outcome] = []
        for contact in contacts:
            reason = invalid_email_reason(contact.email)
            if reason is not None:
                outcomes.append(Skipped(contact.id, reason))
            elif contact.email and contact.email.lower().endswith("@" + self._crm.rejected_domain):
                outcomes.append(
                    PermanentFailure(
                        contact.id, "sandbox: the CRM rejected this address", status_code=400
                    )
                )
            elif self._crm.should_fail():
                outcomes.append(
                    TransientFailure(
                        contact.id, "sandbox: HTTP 503 (injected failure)", status_code=503
                    )
                )
            else:
                assert contact.email is not None
                outcomes.append(
                    Synced(contact.id, self._crm.upsert(contact.email), status_code=200)
                )
        return outcomes

    async def aclose(self) -> None:
        return None


def sandbox_adapter_spec(
    crm: SandboxCrm | None = None,
    *,
    name: str = "sandbox",
    max_batch_size: int = 100,
    rate_limit: RateLimit | None = None,
    remote_id_column: str | None = None,
) -> AdapterSpec[SandboxSettings]:
    """An adapter spec bound to ``crm`` (a fresh :class:`SandboxCrm` by default)."""
    target = crm or SandboxCrm()

    def sandbox(options: SandboxOptions) -> Sandbox[SandboxSettings]:
        target.failure_rate = options.failure_rate
        target.reseed(options.seed)
        return Sandbox(settings=SandboxSettings(), transport=None, fake=target)

    return AdapterSpec(
        name=name,
        settings_model=SandboxSettings,
        factory=lambda settings, context: SandboxAdapter(target, settings, context),
        max_batch_size=max_batch_size,
        rate_limit=rate_limit,
        partial_success=True,
        remote_id_column=remote_id_column,
        sandbox=sandbox,
        description="an in-memory CRM for demos, tests and benchmarks",
    )
