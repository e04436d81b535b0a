"""Settings: environment variables prefixed `Q2C_`, then an optional settings file.

Precedence, highest first: the process environment, the file named by
`Q2C_SETTINGS_FILE`, the state folder's `secrets.env` (written by `q2c dev up` with
generated demo secrets), then the defaults below. Secrets are `SecretStr`, so they
never show in a repr, a log line or a workflow payload.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRETS_FILE_NAME = "secrets.env"
DEMO_RULES = Path(__file__).parent / "demo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="Q2C_", extra="ignore", frozen=True)

    #: Where the dev stack keeps its processes' state, databases and logs.
    state_dir: Path = Path(".q2c")
    host: str = "127.0.0.1"

    # Temporal
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_namespace: str = "default"
    #: Overrides host:temporal_port, e.g. a Temporal Cloud endpoint.
    temporal_address: str | None = None
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    task_queue: str = "q2c"

    # Tryton (ERP and PSA)
    tryton_port: int = 8000
    tryton_database: str = "q2c"
    tryton_user: str = "admin"
    tryton_password: SecretStr = SecretStr("")
    #: Overrides http://host:tryton_port, for a Tryton that q2c does not run.
    tryton_url: str | None = None

    # Salesforce (the stand-in in the demo)
    salesforce_port: int = 8101
    salesforce_url: str | None = None
    salesforce_client_id: str = "q2c-demo"
    salesforce_client_secret: SecretStr = SecretStr("")
    salesforce_webhook_secret: SecretStr = SecretStr("")
    salesforce_api_version: str = "v60.0"

    # Stripe (the stand-in in the demo)
    stripe_port: int = 8102
    stripe_url: str | None = None
    stripe_api_key: SecretStr = SecretStr("")
    stripe_webhook_secret: SecretStr = SecretStr("")

    #: Signs the PSA's events to q2c (milestone completed): `X-Q2C-Signature`.
    psa_webhook_secret: SecretStr = SecretStr("")

    # The q2c service (webhooks, health)
    service_port: int = 8080
    #: How the outside world reaches the service; the stand-ins post webhooks here.
    public_url: str | None = None

    # Store
    database_url: str | None = None

    # Business rules that are configuration, not code (see settings/rules.py)
    #: Billing country -> legal entity, tax regime, currency. Default: the demo's file.
    legal_entities_file: Path = DEMO_RULES / "legal_entities.toml"
    #: CRM product -> PSA role and billing type. Default: the demo's file.
    service_catalogue_file: Path = DEMO_RULES / "service_catalogue.toml"
    #: Customer's country -> tax on services (a fraction). Default: the demo's file.
    tax_rates_file: Path = DEMO_RULES / "tax_rates.toml"
    finance_approvers: list[str] = Field(
        default_factory=lambda: ["finance@northwind.example", "cfo@northwind.example"]
    )
    #: Deals above this amount (in the deal's currency) wait for finance.
    approval_threshold: Decimal = Decimal("250000")
    max_discount_percent: Decimal = Decimal("15")
    #: A change order that raises a project's budget by more than this (in the contract's
    #: currency) waits for finance; so does any retroactive one.
    change_order_budget_threshold: Decimal = Decimal("10000")
    standard_net_days: int = 30
    approval_remind_after: timedelta = timedelta(hours=24)
    approval_expire_after: timedelta = timedelta(days=7)
    #: Billing calendars: name -> cron (UTC). Each starts an invoice cycle for the period
    #: that just ended; "monthly" runs at 06:00 on the 1st.
    billing_calendars: dict[str, str] = Field(default_factory=lambda: {"monthly": "0 6 1 * *"})
    #: How long a run waits for bad deal data to be corrected in the CRM.
    correction_deadline: timedelta = timedelta(days=3)

    # -- per-system task queues (`<task_queue>-tryton`, `-stripe`, `-salesforce`) ----------
    #: Tryton's database, as trytond's `[database] uri`: unset means SQLite in the state
    #: dir; e.g. `postgresql://postgres@127.0.0.1:5432/` for PostgreSQL.
    tryton_database_uri: str | None = None
    #: Concurrent Tryton calls per worker; unset: 1 on SQLite (one writer), 8 on PostgreSQL.
    tryton_max_concurrent_activities: int | None = None
    tryton_activities_per_second: float | None = None
    stripe_max_concurrent_activities: int = 10
    #: Stripe's published limit in test mode (100/s in live mode).
    stripe_activities_per_second: float | None = 25.0
    salesforce_max_concurrent_activities: int = 10
    salesforce_activities_per_second: float | None = None

    # -- outages: a transient error is retried, never compensated --------------------------
    #: After this long retrying a system, the run says so in an exception.
    outage_notice_after: timedelta = timedelta(minutes=3)
    #: After this long, the run stops retrying and waits for a person (retry or compensate).
    tryton_outage_deadline: timedelta = timedelta(hours=24)
    stripe_outage_deadline: timedelta = timedelta(hours=24)
    salesforce_outage_deadline: timedelta = timedelta(hours=24)

    # -- catch-up sweeps for what webhooks missed --------------------------------------------
    sweep_interval: timedelta = timedelta(minutes=5)

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"{self.host}:{self.temporal_port}"

    @property
    def temporal_ui_url(self) -> str:
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def tryton_base_url(self) -> str:
        return self.tryton_url or f"http://{self.host}:{self.tryton_port}"

    @property
    def salesforce_base_url(self) -> str:
        return self.salesforce_url or f"http://{self.host}:{self.salesforce_port}"

    @property
    def stripe_base_url(self) -> str:
        return self.stripe_url or f"http://{self.host}:{self.stripe_port}"

    @property
    def service_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.service_port}"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir.resolve() / 'q2c.sqlite'}"

    def run_link(self, workflow_id: str) -> str:
        """Where a person sees a run in the Temporal Web UI."""
        namespace = self.temporal_namespace
        return f"{self.temporal_ui_url}/namespaces/{namespace}/workflows/{workflow_id}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and files; `overrides` win over both."""
    state_dir = Path(str(overrides.get("state_dir") or os.environ.get("Q2C_STATE_DIR", ".q2c")))
    files: list[Path] = [state_dir / SECRETS_FILE_NAME]
    if extra := os.environ.get("Q2C_SETTINGS_FILE"):
        files.append(Path(extra))
    existing = tuple(str(f) for f in files if f.is_file())
    return Settings(_env_file=existing or None, **overrides)
