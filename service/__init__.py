"""The q2c service: webhook intake (`/webhooks/salesforce`, `/webhooks/stripe`), `/health`."""
