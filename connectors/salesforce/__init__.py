"""Salesforce REST connector: the CRM role (accounts, opportunities, write-back) and the
Closed Won webhook check."""

from connectors.salesforce.client import (
    DEFAULT_API_VERSION,
    SYSTEM,
    SalesforceClient,
    UpsertResult,
    check_id,
    soql_datetime,
    soql_literal,
)
from connectors.salesforce.mapping import to_account, to_opportunity, write_back_fields
from connectors.salesforce.webhook import (
    SIGNATURE_HEADER,
    InvalidEvent,
    InvalidSignature,
    StaleSignature,
    WebhookError,
    closed_won_event,
    parse_closed_won_event,
    verify_webhook_signature,
)
from connectors.salesforce.wire import ChangedOpportunity, ClosedWonEvent, ClosedWonOpportunity

__all__ = [
    "DEFAULT_API_VERSION",
    "SIGNATURE_HEADER",
    "SYSTEM",
    "ChangedOpportunity",
    "ClosedWonEvent",
    "ClosedWonOpportunity",
    "InvalidEvent",
    "InvalidSignature",
    "SalesforceClient",
    "StaleSignature",
    "UpsertResult",
    "WebhookError",
    "check_id",
    "closed_won_event",
    "parse_closed_won_event",
    "soql_datetime",
    "soql_literal",
    "to_account",
    "to_opportunity",
    "verify_webhook_signature",
    "write_back_fields",
]
