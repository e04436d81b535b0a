"""A system activity heartbeats while it waits on its system, so its attempt outlives its
heartbeat timeout, and a lost worker is still noticed within that timeout."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.heartbeat import HeartbeatInterceptor

HEARTBEAT = timedelta(seconds=1)
released = asyncio.Event()


@activity.defn(name="wait_on_a_slow_system")
async def wait_on_a_slow_system(_: str) -> int:
    """Stands for one long HTTP request: no heartbeat of its own while it waits."""
    await released.wait()
    return activity.info().attempt


@workflow.defn(name="SlowSystemCall")
class SlowSystemCall:
    @workflow.run
    async def run(self, _: str) -> int:
        return await workflow.execute_activity(
            wait_on_a_slow_system,
            "",
            start_to_close_timeout=timedelta(minutes=1),
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def heartbeats_past_the_timeout(handle: WorkflowHandle[SlowSystemCall, int]) -> None:
    """Until the pending attempt has been alive for three heartbeat timeouts, as the server
    sees it (a bounded wait on what Temporal reports, not a sleep)."""
    async with asyncio.timeout(30):
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if pending and pending[0].HasField("last_heartbeat_time"):
                alive = (
                    pending[0].last_heartbeat_time.ToDatetime()
                    - pending[0].last_started_time.ToDatetime()
                )
                if alive >= 3 * HEARTBEAT:
                    return
            await asyncio.sleep(0.1)


async def test_a_waiting_system_call_outlives_its_heartbeat_timeout(
    temporal_client: Client, task_queue: str
) -> None:
    """Fault: a system call that takes three times its heartbeat timeout without a
    heartbeat of its own. Assertion: the interceptor's beats keep the attempt alive, and it
    completes on its first attempt (without them it would time out and fail)."""
    released.clear()
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SlowSystemCall],
        activities=[wait_on_a_slow_system],
        interceptors=[HeartbeatInterceptor()],
    ):
        handle = await temporal_client.start_workflow(
            SlowSystemCall.run, "", id=f"slow-{uuid.uuid4()}", task_queue=task_queue
        )
        await heartbeats_past_the_timeout(handle)
        released.set()
        assert await handle.result() == 1
