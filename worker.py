"""The composition root: settings -> store and connectors -> activities -> one worker.

Run it with `q2c worker` (or `python -m worker`). SIGTERM or Ctrl-C drains: running
activities get `graceful_shutdown_timeout` to finish before the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.ledger import LedgerActivities
from settings import Settings, load_settings
from store import Store
from workflows.client import connect

log = logging.getLogger("q2c.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=10)


def build_worker(client: Client, settings: Settings, store: Store) -> Worker:
    ledger = LedgerActivities(store)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[],
        activities=[ledger.record_audit, ledger.record_exception, ledger.link_reference],
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        identity=f"q2c-worker@{socket.gethostname()}:{os.getpid()}",
    )


async def run(settings: Settings) -> None:
    store = Store.from_url(settings.store_url)
    await store.migrate()
    client = await connect(settings)
    worker = build_worker(client, settings, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_target)
    async with worker:
        await stop.wait()
        log.info("shutting down: draining running activities")
    await store.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(load_settings()))


if __name__ == "__main__":
    main()
