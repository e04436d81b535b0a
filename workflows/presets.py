"""Activity timeouts and retry policies, in one place.

Connectors classify errors; a permanent one arrives as a non-retryable `ApplicationError`,
so these policies only bound how long a transient fault is retried before a step fails
for good (and the saga compensates).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy


class CallOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


#: A call to a downstream system: ~10 minutes of retries with backoff, then it fails for good.
#: 30 s per attempt: vendors count 20 s as long-running, and a lost worker is noticed sooner.
SYSTEM_CALL = CallOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=2),
        maximum_attempts=10,
    ),
)

#: q2c's own store and rules: local, quick, retried a while longer.
LOCAL_CALL = CallOptions(
    start_to_close_timeout=timedelta(seconds=15),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=20,
    ),
)

#: Undoing a step: it must eventually happen, so it is retried far longer than a step.
COMPENSATION = CallOptions(
    start_to_close_timeout=timedelta(seconds=60),
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
