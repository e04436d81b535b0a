"""Stripe connector (billing): customers, invoices and their lifecycle, credit notes, webhooks."""

from connectors.stripe.client import (
    SIGNATURE_HEADER,
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
    CreditNote,
    CreditNoteLine,
    customer_params,
    invoice_from_stripe,
    payment_from_stripe,
    payment_kind,
)

__all__ = [
    "EXTERNAL_CUSTOMER",
    "EXTERNAL_INVOICE",
    "INVOICE_EVENT_KINDS",
    "SIGNATURE_HEADER",
    "SYSTEM",
    "WEBHOOK_TOLERANCE_S",
    "CreditNote",
    "CreditNoteLine",
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
