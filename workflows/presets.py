"""Activity timeouts and retry policies, in one place.

Connectors classify errors: a permanent one arrives as a non-retryable `ApplicationError` and
fails its step at once (the saga compensates). A transient one (connection refused, 5xx, 429,
a timeout) is retried without an attempt cap; the lifecycle kit (`_lifecycle.py`) bounds the
wait by the system's outage deadline, and then asks a person.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy


class CallOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


#: One attempt at a system, by the system's queue name: above the worst case of one connector
#: call, re-login and replay included (`connectors/timeouts.py`; checked in
#: `tests/unit/test_presets.py`), so no call is abandoned in flight by its own attempt. An
#: activity making several calls may outlive it; its writes are keyed, so the next converges.
SYSTEM_ATTEMPT = {
    "tryton": timedelta(minutes=10),
    "stripe": timedelta(minutes=5),
    "salesforce": timedelta(minutes=10),
}
#: A worker lost mid-attempt is noticed this fast: system activities heartbeat while they
#: run (`activities/heartbeat.py`), whatever they wait for.
SYSTEM_HEARTBEAT = timedelta(seconds=30)

#: Retry a transient fault for as long as the kit allows, at most a minute apart, so a run
#: resumes within about a minute of its system coming back.
TRANSIENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
)

#: q2c's own store and rules, as local activities: quick, retried for a while (`BOOKKEEPING_FOR`);
#: bookkeeping that still fails is logged and the run goes on.
BOOKKEEPING = CallOptions(
    start_to_close_timeout=timedelta(seconds=15),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=0,
    ),
)
#: How long a bookkeeping write is retried before the run logs it and goes on.
BOOKKEEPING_FOR = timedelta(minutes=10)

#: Undoing a step: it must eventually happen, so it is retried far longer than a step.
COMPENSATION = CallOptions(
    start_to_close_timeout=max(SYSTEM_ATTEMPT.values()),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        maximum_attempts=30,
    ),
)

#: A catch-up sweep: one long activity that heartbeats its progress. A sweep that still
#: fails is not lost: the next scheduled sweep starts from the same checkpoint.
SWEEP_CALL = CallOptions(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
    ),
)
#: A sweep activity that stops heartbeating this long is presumed lost and run again.
SWEEP_HEARTBEAT = timedelta(minutes=1)
