"""The q2c service under test: in-process (ASGI) and as a real process fed by the stand-in.

    webhook_secret            the shared Salesforce webhook secret of one test
    service_settings          one test's settings: its own store and task queue, the session's
                              Temporal dev server
    service                   an `httpx.AsyncClient` on the app in-process, lifespan run
    started_runs              workflow ids a test started; their runs are terminated at its end
    service_with_salesforce   module: the service as a process and a Salesforce stand-in process
                              whose Closed Won webhooks go to it (with its own task queue)
    exposed_service           module: the service under uvicorn on a real socket, every webhook
                              secret set, its own store and task queue (for hostile input)

No worker runs: a started run waits on its task queue, which is all these tests look at.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from connectors.salesforce import SalesforceClient
from devstack.process import spawn, stop_process_group, wait_until_healthy
from service.app import create_app
from settings import Settings
from store.migrate import migrate_store
from tests.fixtures.ports import free_port
from tests.fixtures.service import running_service
from tests.fixtures.webhooks import SECRET_SETTINGS, Endpoint, Quiet, serving

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def temporal_target(client: Client) -> str:
    return client.service_client.config.target_host


@pytest.fixture
def webhook_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def service_settings(
    tmp_path: Path, temporal_client: Client, task_queue: str, webhook_secret: str
) -> Settings:
    return Settings(
        state_dir=tmp_path,
        temporal_address=temporal_target(temporal_client),
        temporal_namespace=temporal_client.namespace,
        task_queue=task_queue,
        salesforce_webhook_secret=SecretStr(webhook_secret),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}",
    )


@pytest.fixture
async def service(service_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings) as http:
        yield http


@pytest.fixture
async def started_runs(temporal_client: Client) -> AsyncIterator[list[str]]:
    """Append the workflow ids a test may have started; their open runs end with the test."""
    ids: list[str] = []
    yield ids
    for workflow_id in ids:
        with contextlib.suppress(RPCError):  # never started, or already closed
            await temporal_client.get_workflow_handle(workflow_id).terminate(reason="test over")


@dataclass
class ServiceWithSalesforce:
    service_url: str
    service_log: Path
    salesforce_url: str
    client_id: str
    client_secret: str
    webhook_secret: str
    task_queue: str
    processes: list[Any] = field(default_factory=list)

    def salesforce(self) -> SalesforceClient:
        """A connector on the stand-in's org; the caller closes it (`async with`)."""
        return SalesforceClient(self.salesforce_url, self.client_id, self.client_secret, timeout=10)

    def replay_webhook(self, opportunity_id: str) -> dict[str, Any]:
        r = httpx.post(f"{self.salesforce_url}/_standin/replay-webhook/{opportunity_id}", timeout=5)
        r.raise_for_status()
        answer: dict[str, Any] = r.json()
        return answer

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.service_log.read_text().splitlines() if needle in line]


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def service_with_salesforce(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> Iterator[ServiceWithSalesforce]:
    workdir = tmp_path_factory.mktemp("service")
    service_port, salesforce_port = free_port(), free_port()
    stack = ServiceWithSalesforce(
        service_url=f"http://127.0.0.1:{service_port}",
        service_log=workdir / "service.log",
        salesforce_url=f"http://127.0.0.1:{salesforce_port}",
        client_id=f"q2c-test-{secrets.token_hex(4)}",
        client_secret=secrets.token_urlsafe(24),
        webhook_secret=secrets.token_urlsafe(24),
        task_queue=f"test-{uuid.uuid4()}",
    )
    client = temporal_env.client
    try:
        env = {
            "Q2C_SETTINGS_FILE": "",
            "Q2C_STATE_DIR": str(workdir),
            "Q2C_HOST": "127.0.0.1",
            "Q2C_SERVICE_PORT": str(service_port),
            "Q2C_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'q2c.sqlite'}",
            "Q2C_TEMPORAL_ADDRESS": temporal_target(client),
            "Q2C_TEMPORAL_NAMESPACE": client.namespace,
            "Q2C_TASK_QUEUE": stack.task_queue,
            "Q2C_SALESFORCE_WEBHOOK_SECRET": stack.webhook_secret,
        }
        # A deployment migrates its store once, before its service starts.
        subprocess.run(
            [str(Path(sys.executable).parent / "q2c"), "store", "migrate"],
            env=os.environ | env,
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        service = spawn(
            [sys.executable, "-m", "service"],
            log_path=stack.service_log,
            env=env,
            cwd=REPO_ROOT,
        )
        stack.processes.append(service)
        salesforce_log = workdir / "salesforce.log"
        salesforce = spawn(
            [
                sys.executable,
                "-m",
                "standins.salesforce",
                "--host",
                "127.0.0.1",
                "--port",
                str(salesforce_port),
                "--db",
                str(workdir / "salesforce.sqlite3"),
                "--webhook-url",
                f"{stack.service_url}/webhooks/salesforce",
            ],
            log_path=salesforce_log,
            env={
                "STANDIN_SF_CLIENT_ID": stack.client_id,
                "STANDIN_SF_CLIENT_SECRET": stack.client_secret,
                "STANDIN_SF_WEBHOOK_SECRET": stack.webhook_secret,
            },
            cwd=REPO_ROOT,
        )
        stack.processes.append(salesforce)
        wait_until_healthy(
            "q2c service",
            lambda: _answers_200(f"{stack.service_url}/health"),
            log_path=stack.service_log,
            process=service,
            timeout=START_TIMEOUT_S,
        )
        wait_until_healthy(
            "salesforce stand-in",
            lambda: _answers_200(f"{stack.salesforce_url}/_standin/health"),
            log_path=salesforce_log,
            process=salesforce,
            timeout=START_TIMEOUT_S,
        )
        yield stack
    finally:
        for process in reversed(stack.processes):
            stop_process_group(process.pid)
            process.wait(timeout=5)


@dataclass(frozen=True)
class ExposedService:
    """The service under uvicorn on a real socket, every webhook secret set, for hostile
    input; `quiet` tells whether anything was recorded or started."""

    url: str
    secrets: dict[str, str]  # by `Settings` field
    quiet: Quiet

    def secret(self, endpoint: Endpoint) -> str:
        return self.secrets[endpoint.setting]


@pytest.fixture(scope="module")
async def exposed_service(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> AsyncIterator[ExposedService]:
    workdir = tmp_path_factory.mktemp("exposed")
    keys = {setting: secrets.token_urlsafe(24) for setting in SECRET_SETTINGS}
    client = temporal_env.client
    settings = Settings(
        state_dir=workdir,
        temporal_address=temporal_target(client),
        temporal_namespace=client.namespace,
        task_queue=f"test-{uuid.uuid4()}",
        database_url=f"sqlite+aiosqlite:///{workdir / 'q2c.sqlite'}",
    ).model_copy(update={setting: SecretStr(key) for setting, key in keys.items()})
    await migrate_store(settings.store_url)  # as `q2c store migrate` before a deployment
    async with serving(create_app(settings)) as url:
        quiet = Quiet(workdir / "q2c.sqlite", client, settings.task_queue)
        yield ExposedService(url, keys, quiet)
