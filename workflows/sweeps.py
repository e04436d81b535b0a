"""Catch-up sweeps: on a Temporal Schedule (`q2c-sweep-crm`, `q2c-sweep-billing`, every
`Q2C_SWEEP_INTERVAL`), look in the CRM and in billing for what webhooks missed, and start or
signal it exactly as the webhook would have.

- crm: Closed Won deals changed since the sweep's checkpoint that have never had a run get
  their opportunity-to-project run (the webhook's business key and reuse policy).
- billing: Stripe invoice events (paid, payment failed, voided, uncollectible) since the
  checkpoint are delivered to the time-to-invoice run their invoice names, deduplicated by
  event id with the webhook.

"Never had a run" is the CRM sweep's test of a missed webhook, so a deal that q2c provisioned
once and that is won again while the service is down is not restarted by the sweep (its
replayed webhook still starts the new run). Billing events are kept by Stripe for 30 days;
a sweep's first look, before it has a checkpoint, goes back one day.

The work is one activity per sweep, on the workflow queue (it starts and signals runs with
the worker's Temporal client); the checkpoint lives in q2c's store, so a sweep that fails is
taken up by the next one from the same point. The activity is named, not imported: it calls
`workflows.starters`, which imports this module for `SweepInput`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import presets

LIFECYCLE = "sweep"
#: Activity names (`activities.sweeps.SweepActivities`).
SWEEP_CRM = "sweep_crm"
SWEEP_BILLING = "sweep_billing"


class SweepInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sweep: Literal["crm", "billing"]


class SweepResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sweep: str
    #: Changes the sweep looked at (deals, or billing events).
    found: int = 0
    #: Runs started (crm) or signalled (billing), by workflow id; the first hundred.
    delivered: list[str] = Field(default_factory=list)
    delivered_count: int = 0
    #: Already handled: the deal has a run, or the event id was delivered before.
    already_handled: int = 0
    #: Billing events naming no open run (each an `unknown_billing_invoice` exception),
    #: and changes that could not be read.
    unknown: int = 0
    skipped: int = 0
    checkpoint: datetime | None = None


async def _sweep(activity: str, request: SweepInput) -> SweepResult:
    result: SweepResult = await workflow.execute_activity(
        activity,
        request,
        result_type=SweepResult,
        heartbeat_timeout=presets.SWEEP_HEARTBEAT,
        **presets.SWEEP_CALL,
    )
    return result


@workflow.defn
class CrmSweepWorkflow:
    @workflow.run
    async def run(self, request: SweepInput) -> SweepResult:
        return await _sweep(SWEEP_CRM, request)


@workflow.defn
class BillingSweepWorkflow:
    @workflow.run
    async def run(self, request: SweepInput) -> SweepResult:
        return await _sweep(SWEEP_BILLING, request)
