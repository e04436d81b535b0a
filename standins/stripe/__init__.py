"""Stripe stand-in: a local ASGI app that speaks the Stripe API as test mode does.

It follows Stripe's documented v1 shapes for what q2c uses: customers, tax rates,
invoice items, invoices (create, finalize, pay, void, mark uncollectible, delete drafts,
line paging) and events. It imports nothing of q2c: it is the outside world.

    python -m standins.stripe --port 8102 --db stripe.sqlite --webhook-url URL

- Auth: `Authorization: Bearer sk_test_...` (or HTTP Basic with the key as user name);
  any `sk_test_` key is accepted, and idempotency keys are kept per key.
- Bodies are form-encoded with Stripe's brackets (`metadata[k]=v`, `tax_rates[0]=txr_..`);
  money is in integer minor units, currencies lower-case.
- `Idempotency-Key` on POST/DELETE: the same key and parameters replay the first answer
  (`Idempotent-Replayed: true`); other parameters or another endpoint give 400
  `idempotency_error`; a request arriving while another with the same key is still
  being answered gives 409 `idempotency_key_in_use` (retry it later). Answers are kept
  for 24 hours, successes and card declines alike; requests refused for their
  parameters are not kept, as at Stripe.
- Webhooks: every event is stored (`GET /v1/events`) and, with `--webhook-url`, posted
  in the background with `Stripe-Signature: t=..,v1=..`, signed with the secret in
  `STANDIN_STRIPE_WEBHOOK_SECRET` (required with `--webhook-url`); failed deliveries are
  retried for about 15 s and resent after a restart; order is not guaranteed.
- Failing payments: a customer whose metadata has `standin_payment=fail` gets 402
  `card_declined` from `POST /v1/invoices/{id}/pay` (unless `paid_out_of_band=true`),
  and `invoice.payment_failed` is emitted. Clear the metadata key to let payments pass.
- Fault injection and health: `/_standin/faults`, `/_standin/health` (see `standins.faults`).
- Not modelled: prices and products (`pricing`, `price_data`), payment methods, automatic
  collection (`auto_advance` is recorded, never acted upon), discounts, credit notes.
"""

from standins.stripe.app import WEBHOOK_SECRET_ENV, StripeStandin, build_app, create_app

__all__ = ["WEBHOOK_SECRET_ENV", "StripeStandin", "build_app", "create_app"]
