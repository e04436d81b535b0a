"""The custom search attributes that make q2c's runs findable in the Temporal Web UI.

The dev stack registers them when it starts the server; a production namespace needs
them registered once (`temporal operator search-attribute create`).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

#: The CRM opportunity id: the correlation id on every run, log line and request.
CORRELATION_ID = SearchAttributeKey.for_keyword("Q2cCorrelationId")
CUSTOMER = SearchAttributeKey.for_keyword("Q2cCustomer")
LIFECYCLE = SearchAttributeKey.for_keyword("Q2cLifecycle")
STEP = SearchAttributeKey.for_keyword("Q2cStep")
#: The system a run is waiting on during an outage ("stripe"), empty otherwise.
WAITING_ON = SearchAttributeKey.for_keyword("Q2cWaitingOn")

ALL = (CORRELATION_ID, CUSTOMER, LIFECYCLE, STEP, WAITING_ON)


def server_flags() -> list[str]:
    """`temporal server start-dev` flags that register every attribute above."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={key.indexed_value_type.name.title()}"]
    return flags
