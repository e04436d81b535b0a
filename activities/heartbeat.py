"""Activities that call a system heartbeat while they run, whatever they are waiting for.

An attempt at a system may legitimately take minutes (its timeout is above the worst case of
the connector calls it makes, `connectors/timeouts.py`), but a worker that dies must be
noticed in seconds, not minutes: the workflow sets a short heartbeat timeout, and this
interceptor beats for every activity that has one, so a silent attempt means a lost worker.
Activities that report progress (`activity.heartbeat(cursor)`) keep doing so; nothing reads
heartbeat details back, so the beats in between lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

#: Beats per heartbeat timeout: enough that one late beat never times the attempt out.
BEATS_PER_TIMEOUT = 4


class HeartbeatInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Heartbeating(next)


class _Heartbeating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local or not info.heartbeat_timeout:
            return await super().execute_activity(input)
        every = info.heartbeat_timeout.total_seconds() / BEATS_PER_TIMEOUT
        beating = asyncio.create_task(_beat(every))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


async def _beat(every: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)
