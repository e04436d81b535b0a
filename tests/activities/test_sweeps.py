"""The CRM sweep's activity against a real Temporal server and store, with a CRM fake that
answers the sweep's query as Salesforce does (`>=` on whole seconds, oldest change first)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.sweeps import SweepActivities, crm_checkpoint
from connectors.salesforce import ChangedOpportunity
from connectors.stripe import wire
from settings import Settings
from store import Store
from workflows.opportunity_to_project import workflow_id
from workflows.starters import find_opportunity_run, start_opportunity_run
from workflows.sweeps import SweepInput

#: The checkpoint the sweep starts from; SOQL reads it as 12:00:00 (whole seconds).
CHECKPOINT = datetime(2026, 11, 30, 12, 0, 0, 700000, tzinfo=UTC)


class FakeCrm:
    def __init__(self, deals: dict[str, datetime]) -> None:
        self.deals = deals
        self.asked: list[datetime] = []

    async def closed_won_changed_since(
        self, since: datetime, *, limit: int | None = None
    ) -> AsyncIterator[ChangedOpportunity]:
        self.asked.append(since)
        floor = since.replace(microsecond=0)
        for opp, at in sorted(self.deals.items(), key=lambda d: (d[1], d[0])):
            if at >= floor:
                yield ChangedOpportunity.model_validate({"Id": opp, "LastModifiedDate": at})


class NoBilling:
    async def list_events(
        self,
        types: Sequence[str],
        *,
        created_gte: int,
        limit: int = 100,
        starting_after: str | None = None,
    ) -> wire.ListObject[wire.Event]:
        raise AssertionError("the CRM sweep does not ask billing")


def opportunity(n: int) -> str:
    return f"006TST{n:03d}{datetime.now(UTC).strftime('%H%M%S%f')[:9]}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}")
    await store.migrate()
    yield store
    await store.close()


async def test_deals_without_a_run_are_started_once_and_the_checkpoint_follows(
    temporal_client: Client, task_queue: str, tmp_path: Path, store: Store
) -> None:
    settings = Settings(state_dir=tmp_path, task_queue=task_queue)
    seen, new, same_second, old = (opportunity(n) for n in range(4))
    crm = FakeCrm(
        {
            seen: CHECKPOINT + timedelta(seconds=1),
            new: CHECKPOINT + timedelta(seconds=2, milliseconds=100),
            same_second: CHECKPOINT + timedelta(seconds=2, milliseconds=100),
            old: CHECKPOINT - timedelta(minutes=5),  # before the checkpoint: not asked for
        }
    )
    # `seen` came in by its webhook: the sweep must leave it alone.
    await start_opportunity_run(temporal_client, settings, seen, crm="salesforce", trigger="t")
    await store.advance_sweep_checkpoint(crm_checkpoint("salesforce"), CHECKPOINT)
    sweeps = SweepActivities(settings, {"salesforce": crm}, NoBilling(), store, temporal_client)
    ids = [workflow_id("salesforce", o) for o in (seen, new, same_second, old)]
    try:
        first = await ActivityEnvironment().run(sweeps.sweep_crm, SweepInput(sweep="crm"))

        assert crm.asked == [CHECKPOINT]
        assert sorted(first.delivered) == sorted(ids[1:3])
        assert (first.found, first.delivered_count, first.already_handled) == (3, 2, 1)
        newest = CHECKPOINT + timedelta(seconds=2, milliseconds=100)
        assert first.checkpoint == newest
        assert await store.sweep_checkpoint(crm_checkpoint("salesforce")) == newest
        assert await find_opportunity_run(temporal_client, old, crm="salesforce") is None

        # Again: the same second is asked for again (whole seconds), and nothing starts.
        again = await ActivityEnvironment().run(sweeps.sweep_crm, SweepInput(sweep="crm"))
        assert crm.asked[-1] == newest
        assert (again.found, again.delivered_count, again.already_handled) == (2, 0, 2)
    finally:
        for wid in ids:
            with contextlib.suppress(RPCError):
                await temporal_client.get_workflow_handle(wid).terminate("test over")
