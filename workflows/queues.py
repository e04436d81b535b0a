"""Task queues: workflows run on the deployment's queue (`q2c`); activities that call a
system run on that system's queue, whose worker carries the system's limits.

A workflow derives its activity queues from its own (`workflow.info().task_queue`), so a
test's private queue gets private system queues too.
"""

from __future__ import annotations

from enum import StrEnum


class SystemQueue(StrEnum):
    TRYTON = "tryton"
    STRIPE = "stripe"
    SALESFORCE = "salesforce"


def activity_queue(workflow_queue: str, system: SystemQueue | str) -> str:
    """`q2c` + tryton -> `q2c-tryton`."""
    return f"{workflow_queue}-{SystemQueue(system).value}"


def all_queues(workflow_queue: str) -> list[str]:
    """Every queue a deployment serves: the workflows' and one per system."""
    return [workflow_queue, *(activity_queue(workflow_queue, s) for s in SystemQueue)]
