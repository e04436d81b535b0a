"""Stripe connector (billing)."""
