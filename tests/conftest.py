"""Shared fixtures: each real system has its own plugin module in `tests/fixtures/`."""

pytest_plugins = [
    "tests.fixtures.ports",
    "tests.fixtures.store",
    "tests.fixtures.temporal",
    "tests.fixtures.salesforce",
    "tests.fixtures.tryton",
    "tests.fixtures.stripe",
]
