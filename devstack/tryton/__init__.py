"""Run a Tryton server for the dev stack and the tests, and set its database up for q2c.

By concern: `server` (folder, config, database, health, admin password), `snapshots`
(snapshots, the bootstrap marker and the digest of what shapes a database), `reference`
(the reference data and settings files a database is set up from), `bootstrapping` (setting
it up), `periods` (closing a month). `python -m devstack.tryton trytond ...` runs
Tryton's tools with q2c's module (`__main__`). The names the dev stack and the tests use
are re-exported here.
"""

from devstack.tryton.bootstrapping import bootstrap, ensure_bootstrapped
from devstack.tryton.periods import close_period, reopen_period
from devstack.tryton.reference import (
    DEFAULT_LEGAL_ENTITIES,
    DEFAULT_TAX_RATES,
    PRODUCT_CATEGORY,
    SERVICE_PRODUCTS,
    TAX_PAYABLE_CODE,
    load_legal_entities,
    load_tax_rates,
)
from devstack.tryton.result import BootstrapResult, CompanyResult
from devstack.tryton.server import (
    ADMIN_LOG_NAME,
    MODULES,
    Q2C_MODULE,
    SERVER_LOG_NAME,
    backend_label,
    config_path,
    create_database,
    database_exists,
    database_path,
    health_check,
    marker_path,
    missing_modules,
    prepare,
    server_argv,
    set_admin_password,
    write_config,
)
from devstack.tryton.snapshots import (
    inputs_digest,
    is_bootstrapped,
    mark_bootstrapped,
    read_bootstrap,
    restore,
    snapshot,
)

__all__ = [
    "ADMIN_LOG_NAME",
    "DEFAULT_LEGAL_ENTITIES",
    "DEFAULT_TAX_RATES",
    "MODULES",
    "PRODUCT_CATEGORY",
    "Q2C_MODULE",
    "SERVER_LOG_NAME",
    "SERVICE_PRODUCTS",
    "TAX_PAYABLE_CODE",
    "BootstrapResult",
    "CompanyResult",
    "backend_label",
    "bootstrap",
    "close_period",
    "config_path",
    "create_database",
    "database_exists",
    "database_path",
    "ensure_bootstrapped",
    "health_check",
    "inputs_digest",
    "is_bootstrapped",
    "load_legal_entities",
    "load_tax_rates",
    "mark_bootstrapped",
    "marker_path",
    "missing_modules",
    "prepare",
    "read_bootstrap",
    "reopen_period",
    "restore",
    "server_argv",
    "set_admin_password",
    "snapshot",
    "write_config",
]
