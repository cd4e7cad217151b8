"""Across-run retry policy (design.md section 3)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmsync_core.retry import RequestRetry, RetryPolicy
from crmsync_core.settings import SyncSettings


def minutes(policy: RetryPolicy, failed: int) -> float | None:
    delay = policy.delay_after(failed)
    return None if delay is None else delay.total_seconds() / 60


def test_design_schedule_exponential() -> None:
    policy = RetryPolicy(max_retries=3, delay=timedelta(minutes=5), exponential=True)
    assert [minutes(policy, n) for n in (1, 2, 3, 4)] == [5, 10, 20, None]
    assert policy.max_attempts == 4


def test_linear_schedule() -> None:
    policy = RetryPolicy(max_retries=3, delay=timedelta(minutes=5), exponential=False)
    assert [minutes(policy, n) for n in (1, 2, 3, 4)] == [5, 10, 15, None]


def test_delay_is_capped() -> None:
    policy = RetryPolicy(max_retries=20, delay=timedelta(minutes=5), max_delay=timedelta(hours=1))
    assert minutes(policy, 15) == 60


def test_retry_after_lengthens_but_never_shortens() -> None:
    policy = RetryPolicy(delay=timedelta(minutes=5))
    assert policy.delay_after(1, retry_after=3600) == timedelta(hours=1)
    assert policy.delay_after(1, retry_after=1) == timedelta(minutes=5)


def test_no_retries_means_first_failure_is_final() -> None:
    assert RetryPolicy(max_retries=0).delay_after(1) is None


@given(failed=st.integers(1, 10), jitter=st.floats(0, 0.99), seed=st.integers(0, 1000))
def test_jitter_stays_within_its_fraction(failed: int, jitter: float, seed: int) -> None:
    policy = RetryPolicy(max_retries=10, delay=timedelta(minutes=1), jitter=jitter)
    plain = RetryPolicy(max_retries=10, delay=timedelta(minutes=1)).delay_after(failed)
    delay = policy.delay_after(failed, rng=random.Random(seed))
    assert plain is not None and delay is not None
    assert (
        plain * (1 - jitter) - timedelta(microseconds=1)
        <= delay
        <= plain * (1 + jitter) + timedelta(microseconds=1)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"delay": timedelta(minutes=-1)}, {"jitter": 1.5}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrevoLike(SyncSettings):
        model_config = {"env_prefix": "BREVO_"}  # type: ignore[typeddict-unknown-key]

    monkeypatch.setenv("BREVO_SYNC_MAX_RETRIES", "5")
    monkeypatch.setenv("BREVO_SYNC_RETRY_DELAY_MINUTES", "2")
    monkeypatch.setenv("BREVO_SYNC_RETRY_EXPONENTIAL", "false")
    policy = BrevoLike().retry_policy()
    assert (policy.max_retries, policy.delay, policy.exponential) == (
        5,
        timedelta(minutes=2),
        False,
    )


def test_request_backoff_doubles_up_to_its_cap() -> None:
    retry = RequestRetry(attempts=5, initial_wait=0.5, max_wait=2)
    assert [retry.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
