"""`q2c dev up / status / down` as a newcomer runs them, on free ports and a fresh state folder."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import tryton as devtryton
from devstack import tryton_postgres as pgtryton
from devstack.process import pid_alive
from tests.fixtures.ports import free_port, require_or_skip
from tests.fixtures.tryton import PG_URI, cached_template

Q2C = str(Path(sys.executable).parent / "q2c")
UP_TIMEOUT_S = 420


def q2c(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [Q2C, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line or environment mentions `text`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if (text in cmdline or text in environ) and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def _fresh_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh state folder and free ports for every part."""
    state = tmp_path_factory.mktemp("stack") / ".q2c"
    env = {k: v for k, v in os.environ.items() if not k.startswith("Q2C_")}
    env.update(
        Q2C_STATE_DIR=str(state),
        Q2C_TEMPORAL_PORT=str(free_port()),
        Q2C_TEMPORAL_UI_PORT=str(free_port()),
        Q2C_TRYTON_PORT=str(free_port()),
        Q2C_SALESFORCE_PORT=str(free_port()),
        Q2C_STRIPE_PORT=str(free_port()),
        Q2C_SERVICE_PORT=str(free_port()),
        Q2C_TASK_QUEUE="q2c-stack-test",
    )
    return env


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = _fresh_env(tmp_path_factory)
    try:
        yield env
    finally:
        q2c(env, "dev", "down")


@pytest.fixture
def postgres_stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack whose Tryton keeps a throw-away database on the test PostgreSQL server.

    The database starts as a copy of the tests' set-up template (building one from nothing
    takes minutes on PostgreSQL; `tryton_postgres` builds the template once, with the same
    `devtryton.prepare`), with the stack's admin password, and without the stack's
    bootstrap marker: `up` must bootstrap it, then reuse it.
    """
    reason = pgtryton.unreachable(PG_URI)
    if reason is not None:
        require_or_skip(reason)
    env = _fresh_env(tmp_path_factory)
    database = f"q2c_stack_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(18)
    env.update(
        Q2C_TRYTON_DATABASE_URI=PG_URI, Q2C_TRYTON_DATABASE=database, Q2C_TRYTON_PASSWORD=password
    )
    template, _ = cached_template(PG_URI)
    pgtryton.create_database(PG_URI, database, template=template)
    try:
        devtryton.set_admin_password(
            Path(env["Q2C_STATE_DIR"]), database, password, database_uri=PG_URI
        )
        yield env
    finally:
        q2c(env, "dev", "down")
        pgtryton.drop_database(PG_URI, database)


def test_up_status_down(stack_env: dict[str, str]) -> None:
    env = stack_env
    state = Path(env["Q2C_STATE_DIR"])
    up = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, up.stdout + up.stderr

    status = q2c(env, "dev", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    parts = {p["name"]: p for p in report["parts"]}
    assert set(parts) == {"temporal", "tryton", "salesforce", "stripe", "service", "worker"}
    assert all(p["healthy"] and p["pid"] for p in parts.values()), parts
    ui = f"http://127.0.0.1:{env['Q2C_TEMPORAL_UI_PORT']}"
    assert report["temporal_ui"] == ui and parts["temporal"]["url"] == ui
    assert httpx.get(ui, timeout=10).status_code == 200
    health = httpx.get(parts["service"]["url"], timeout=10).json()
    assert health == {"status": "ok", "checks": {"store": "ok", "temporal": "ok"}}

    # Secrets were generated into the state folder, readable by the owner only.
    secrets_file = state / "secrets.env"
    assert secrets_file.stat().st_mode & 0o077 == 0
    assert "Q2C_STRIPE_API_KEY=sk_test_" in secrets_file.read_text()

    # Human-readable status names every part and the Web UI.
    table = q2c(env, "dev", "status")
    assert table.returncode == 0 and "Temporal Web UI" in table.stdout and "worker" in table.stdout

    # Running `up` again while everything is up changes nothing.
    again = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 6
    pids_after = {
        p["name"]: p["pid"] for p in json.loads(q2c(env, "dev", "status", "--json").stdout)["parts"]
    }
    assert pids_after == {name: p["pid"] for name, p in parts.items()}

    down = q2c(env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p["pid"]) for p in parts.values())
    assert _processes_mentioning(str(state)) == []
    stopped = q2c(env, "dev", "status", "--json")
    assert stopped.returncode == 1
    assert not any(p["running"] for p in json.loads(stopped.stdout)["parts"])


def test_a_part_that_cannot_start_is_named_with_its_log(stack_env: dict[str, str]) -> None:
    env = dict(stack_env)
    # Something else holds the Stripe stand-in's port without speaking HTTP.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        env["Q2C_STRIPE_PORT"] = str(blocker.getsockname()[1])
        up = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
    assert up.returncode == 1
    line = up.stderr.strip()
    assert line.startswith("error: stripe did not come up")
    assert str(Path(env["Q2C_STATE_DIR"]) / "logs" / "stripe.log") in line
    assert "Traceback" not in up.stderr
    q2c(env, "dev", "down")
    assert _processes_mentioning(env["Q2C_STATE_DIR"]) == []


def test_tryton_on_postgresql_is_bootstrapped_then_reused_and_stopped(
    postgres_stack_env: dict[str, str],
) -> None:
    env = postgres_stack_env
    state = Path(env["Q2C_STATE_DIR"])
    database = env["Q2C_TRYTON_DATABASE"]
    marker = devtryton.marker_path(state / "tryton", database, PG_URI)
    assert not marker.exists()

    up = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, up.stdout + up.stderr
    status = q2c(env, "dev", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    tryton = next(p for p in json.loads(status.stdout)["parts"] if p["name"] == "tryton")
    assert tryton["healthy"] and tryton["pid"]
    assert tryton["detail"] == f"database {database} on postgresql://127.0.0.1:5432"
    assert "postgresql://127.0.0.1:5432" in q2c(env, "dev", "status").stdout

    # The database on PostgreSQL is set up as on SQLite: a company per legal entity, with
    # its chart, fiscal years and the service products; no SQLite file.
    entities = devtryton.load_legal_entities()
    with pgtryton.connect(PG_URI, database) as conn:
        companies = conn.execute("SELECT count(*) FROM company_company").fetchone()
        charts = conn.execute(
            "SELECT count(DISTINCT company) FROM account_account WHERE parent IS NULL"
        ).fetchone()
        years = conn.execute("SELECT count(*) FROM account_fiscalyear").fetchone()
        products = conn.execute(
            "SELECT count(*) FROM product_template WHERE type = 'service' AND salable"
        ).fetchone()
        q2c_module = conn.execute(
            "SELECT state FROM ir_module WHERE name = %s", (devtryton.Q2C_MODULE,)
        ).fetchone()
    assert companies == (len(entities),) and charts == (len(entities),)
    assert years == (2 * len(entities),)
    assert products == (len(devtryton.SERVICE_PRODUCTS),)
    assert q2c_module == ("activated",)
    assert not devtryton.database_path(state / "tryton", database).exists()
    assert marker.exists()

    down = q2c(env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert not pid_alive(tryton["pid"])
    assert _processes_mentioning(str(state)) == []

    # The next `up` reuses the database: nothing is created, activated or set up again.
    admin_log = state / "tryton" / devtryton.ADMIN_LOG_NAME
    admin_runs = admin_log.read_text().count("$ ") if admin_log.exists() else 0
    bootstrapped_at = marker.stat().st_mtime_ns
    again = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (admin_log.read_text().count("$ ") if admin_log.exists() else 0) == admin_runs
    assert marker.stat().st_mtime_ns == bootstrapped_at
    with pgtryton.connect(PG_URI, database) as conn:
        assert conn.execute("SELECT count(*) FROM company_company").fetchone() == companies
    assert q2c(env, "dev", "down").returncode == 0
    assert _processes_mentioning(str(state)) == []


def test_a_postgresql_that_does_not_answer_is_named(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = _fresh_env(tmp_path_factory)
    nobody = free_port()
    env["Q2C_TRYTON_DATABASE_URI"] = f"postgresql://postgres@127.0.0.1:{nobody}/"
    try:
        up = q2c(env, "dev", "up", timeout=UP_TIMEOUT_S)
        assert up.returncode == 1
        line = up.stderr.strip()
        assert line.startswith(
            f"error: tryton did not come up: PostgreSQL unreachable at "
            f"postgresql://127.0.0.1:{nobody}: connection failed"
        ), line
        assert "Traceback" not in up.stderr
    finally:
        q2c(env, "dev", "down")
    assert _processes_mentioning(env["Q2C_STATE_DIR"]) == []
