"""The q2c service: webhook intake (`POST /webhooks/salesforce`) and `/health`."""
