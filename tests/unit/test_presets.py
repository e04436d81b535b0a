"""Activity timeouts sit above what the connectors may take, so an attempt is never
abandoned while one of its requests may still land (issue 7)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors import timeouts
from workflows import presets
from workflows.queues import SystemQueue


@pytest.mark.parametrize(
    ("system", "worst_call"),
    [
        (SystemQueue.TRYTON, timeouts.TRYTON_CALL_MAX),
        (SystemQueue.STRIPE, timeouts.STRIPE_CALL_MAX),
        (SystemQueue.SALESFORCE, timeouts.SALESFORCE_CALL_MAX),
    ],
)
def test_an_attempt_outlasts_its_systems_worst_call(
    system: SystemQueue, worst_call: timedelta
) -> None:
    """An attempt is never timed out while one of its connector calls may still land; a lost
    worker is noticed long before the attempt's end."""
    attempt = presets.SYSTEM_ATTEMPT[system.value]
    assert attempt > worst_call
    assert attempt > presets.SYSTEM_HEARTBEAT * 4
    assert presets.COMPENSATION["start_to_close_timeout"] >= attempt
