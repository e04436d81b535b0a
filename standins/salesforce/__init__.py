"""Salesforce stand-in: a local ASGI app that speaks the Salesforce REST API q2c uses.

It is the outside world: it imports nothing of q2c. Run it with

    STANDIN_SF_CLIENT_ID=... STANDIN_SF_CLIENT_SECRET=... [STANDIN_SF_WEBHOOK_SECRET=...] \\
        python -m standins.salesforce --port 8701 --db sf.sqlite3 [--webhook-url URL]

`STANDIN_SF_TOKEN_TTL` (seconds, default 7200) sets how long an access token lives.

Closed Won webhook
------------------
Salesforce itself would call out through a flow or an outbound message; this org posts one
JSON event each time an opportunity is created in, or moves to, stage "Closed Won":

    {"eventId": "<uuid4>", "eventType": "opportunity.closed_won",
     "occurredAt": "2025-01-31T12:00:00.123456Z", "organizationId": "00D...",
     "sobject": {"Id", "Name", "AccountId", "StageName", "Amount", "CurrencyIsoCode",
                 "CloseDate", "LastModifiedDate"}}

signed with the shared secret `STANDIN_SF_WEBHOOK_SECRET` in the header

    X-Salesforce-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

A receiver recomputes the HMAC over the raw body bytes exactly as received, compares in
constant time, and refuses a `t` too far from its own clock (five minutes), so a captured
delivery cannot be replayed later. Deliveries leave in the background, never holding up
the API answer; a failed one (transport error or non-2xx) is retried after 0.5, 1, 2 and 4
seconds, each attempt freshly signed. Retries and `POST /_standin/replay-webhook/<id>`
(which re-sends the opportunity's last event) carry the same `eventId`: receivers must
treat deliveries as at-least-once and deduplicate on it.

Change-order webhook
--------------------
Each time a `Change_Order__c` is created in, or moves to, `Status__c` "Approved" (once its
lines and milestones are in: approve after writing them), the org posts, to the same
receiver with the same signature, retries and replay (by the change order's id):

    {"eventId": "<uuid4>", "eventType": "change_order.approved", "occurredAt": ...,
     "organizationId": "00D...",
     "sobject": {"Id", "Name", "Opportunity__c", "Status__c", "Amount_Delta__c",
                 "CurrencyIsoCode", "Effective_Date__c", "Approved_At__c", "LastModifiedDate"}}

`Approved_At__c` is stamped (whole seconds, UTC) on entering Approved unless the same write
sets it. A change order approved again later (after going back to Draft) is a new event.

Other control endpoints: `/_standin/health`, `/_standin/faults` (see `standins.faults`),
`POST /_standin/expire-sessions` (ends every access token, as a session timeout would).
"""

from standins.salesforce.app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
