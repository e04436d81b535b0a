"""Tryton JSON-RPC connector (ERP and PSA)."""

from connectors.tryton.catalog import Catalog, Company
from connectors.tryton.client import SYSTEM, TrytonClient, classify_rpc_error
from connectors.tryton.erp import TrytonErp
from connectors.tryton.mapping import (
    DEFAULT_PRODUCT,
    LEGAL_ENTITY_PREFIX,
    ROLE_PRODUCTS,
    product_for_role,
)
from connectors.tryton.psa import TrytonPsa
from connectors.tryton.wire import (
    Employee,
    ErpInvoice,
    ErpInvoiceInfo,
    ExpensePage,
    InvoiceCorrection,
    ProjectInfo,
    ProjectRef,
    ProjectRevenue,
    ProjectTerms,
    ProjectTermsChange,
    TaskInfo,
    TaskState,
    TimePage,
)

__all__ = [
    "DEFAULT_PRODUCT",
    "LEGAL_ENTITY_PREFIX",
    "ROLE_PRODUCTS",
    "SYSTEM",
    "Catalog",
    "Company",
    "Employee",
    "ErpInvoice",
    "ErpInvoiceInfo",
    "ExpensePage",
    "InvoiceCorrection",
    "ProjectInfo",
    "ProjectRef",
    "ProjectRevenue",
    "ProjectTerms",
    "ProjectTermsChange",
    "TaskInfo",
    "TaskState",
    "TimePage",
    "TrytonClient",
    "TrytonErp",
    "TrytonPsa",
    "classify_rpc_error",
    "product_for_role",
]
