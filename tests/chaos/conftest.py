"""The chaos suite's fixtures: one stack of real processes (see `stack.py`; the burst
driver and its faults are in `driver.py`).

chaos_stack   package: the whole q2c stack as separate processes (SQLite store, one
              worker, one service), stopped after the chaos tests whatever happens
stack         function: that stack, every part running and every stand-in fault cleared
              before and after the test
make_stack    function: a stack of another shape (store, workers, replicas), stopped
              after the test
store_database  function: an empty PostgreSQL database for a stack's store
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.stack import ChaosStack, StackConfig
from tests.fixtures.ports import require_or_skip
from tests.fixtures.store import PG_ADMIN_DSN, _pg_admin


@contextlib.contextmanager
def running(stack: ChaosStack) -> Iterator[ChaosStack]:
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="package")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    with running(ChaosStack(tmp_path_factory.mktemp("chaos"), StackConfig())) as stack:
        yield stack


@pytest.fixture
def stack(chaos_stack: ChaosStack) -> Iterator[ChaosStack]:
    chaos_stack.heal()
    yield chaos_stack
    chaos_stack.heal()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[[StackConfig], ChaosStack]]:
    """Start a stack of another shape; every one made is stopped after the test.

    It blocks while the processes start: from a coroutine, call it in a thread.
    """
    with contextlib.ExitStack() as made:
        count = 0

        def make(config: StackConfig) -> ChaosStack:
            nonlocal count
            count += 1
            return made.enter_context(running(ChaosStack(tmp_path / f"stack-{count}", config)))

        yield make


@pytest.fixture
def store_database() -> Iterator[str]:
    """A PostgreSQL database of the chaos test's own (not the session's shared one, which
    the store tests empty between tests), dropped afterwards."""
    name = f"q2c_chaos_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except OSError as exc:
        require_or_skip(f"PostgreSQL unreachable at {PG_ADMIN_DSN}: {exc}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
