"""The harness itself, on a single deal (today's q2c races from two concurrent deals on):
if this fails, the chaos tests' verdicts mean nothing."""

from __future__ import annotations

import pytest

from tests.chaos.driver import drive_burst
from tests.chaos.stack import ChaosStack

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


async def test_one_deal_through_the_process_stack(stack: ChaosStack) -> None:
    """Fault: none; one deal for a new customer closed won in the CRM stand-in, whose
    signed webhook reaches the service process. Assertion: the run completes, the CRM shows
    "provisioned", the account has one Tryton party and one Stripe customer, the deal one
    open Tryton project."""
    outcome = await drive_burst(stack, 1)
    assert not outcome.problems, "\n".join(outcome.problems)
