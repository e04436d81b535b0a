"""Stripe stand-in: a local ASGI app that speaks the Stripe API in test mode."""
