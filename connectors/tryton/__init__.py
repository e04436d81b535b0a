"""Tryton JSON-RPC connector (ERP and PSA)."""
