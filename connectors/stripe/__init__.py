"""Stripe connector (billing): customers, invoices and their lifecycle, webhooks."""

from connectors.stripe.client import (
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    WEBHOOK_TOLERANCE_S,
    PaymentDeclined,
    StripeBilling,
    WebhookRejected,
    classify,
    verify_webhook,
)
from connectors.stripe.mapping import (
    EXTERNAL_CUSTOMER,
    EXTERNAL_INVOICE,
    INVOICE_EVENT_KINDS,
    SYSTEM,
    customer_params,
    invoice_from_stripe,
    payment_from_stripe,
    payment_kind,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "EXTERNAL_CUSTOMER",
    "EXTERNAL_INVOICE",
    "INVOICE_EVENT_KINDS",
    "REQUEST_TIMEOUT_S",
    "SYSTEM",
    "WEBHOOK_TOLERANCE_S",
    "PaymentDeclined",
    "StripeBilling",
    "WebhookRejected",
    "classify",
    "customer_params",
    "invoice_from_stripe",
    "payment_from_stripe",
    "payment_kind",
    "verify_webhook",
]
