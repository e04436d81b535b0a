"""Salesforce REST connector."""
