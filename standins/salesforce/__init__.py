"""Salesforce stand-in: a local ASGI app that speaks the Salesforce REST API."""
