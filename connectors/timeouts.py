"""How long one connector call can take at worst; activity timeouts must exceed it.

An attempt whose activity timed out is not stopped: its request is still in flight, and
the server may still commit it, while Temporal starts the next attempt. Two attempts of
one step then write at once. So every phase of every request is bounded here, and the
workflow presets set each activity's `start_to_close_timeout` above the worst case of the
calls it makes (an activity making n sequential calls needs n times `*_CALL_MAX`).

A request's worst case is the sum of its phases: waiting for a pooled connection,
connecting, sending, waiting for the answer (`read` bounds each wait between bytes; a
JSON answer arrives whole once the server is done). A call's worst case counts the
requests a client can make for it: re-authentication and its one replay included.
"""

from __future__ import annotations

from datetime import timedelta

import httpx


def request_max(timeout: httpx.Timeout) -> timedelta:
    """The longest one request with `timeout` can take before the client gives up."""
    phases = (timeout.pool, timeout.connect, timeout.write, timeout.read)
    if any(phase is None for phase in phases):
        raise ValueError(f"every phase must be bounded: {timeout!r}")
    return timedelta(seconds=sum(p for p in phases if p is not None))


#: Tryton: posting an invoice or activating a chart of accounts takes seconds on SQLite.
TRYTON_HTTP_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=5.0)
#: A fresh client logs in (login, preferences) before its first call; a call refused
#: with 401 (session expired) logs in again and is replayed once: 6 requests at most.
TRYTON_REQUESTS_PER_CALL = 6
TRYTON_REQUEST_MAX = request_max(TRYTON_HTTP_TIMEOUT)
TRYTON_CALL_MAX = TRYTON_REQUEST_MAX * TRYTON_REQUESTS_PER_CALL

#: Stripe answers most calls well under a second; finalizing large invoices takes longer.
STRIPE_HTTP_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=5.0)
#: API-key auth and no retries of the library's own (`max_network_retries=0`): 1 request.
STRIPE_CALL_MAX = request_max(STRIPE_HTTP_TIMEOUT)

#: Salesforce counts requests of 20 s or more as long-running; past a minute something is wrong.
SALESFORCE_HTTP_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=10.0, pool=5.0)
#: A token before the first call; a 401 gets a new token and one replay: 4 requests.
SALESFORCE_REQUESTS_PER_CALL = 4
SALESFORCE_REQUEST_MAX = request_max(SALESFORCE_HTTP_TIMEOUT)
SALESFORCE_CALL_MAX = SALESFORCE_REQUEST_MAX * SALESFORCE_REQUESTS_PER_CALL
