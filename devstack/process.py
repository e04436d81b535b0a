"""Start, watch and stop the background processes of the dev stack and of tests.

Each process runs in its own session (process group), so stopping it stops whatever
it forked, and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

#: How long a part may take to answer its health check after it was started.
DEFAULT_START_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0


class PartFailed(RuntimeError):
    """A part did not come up; the message names it and points at its log."""

    def __init__(self, name: str, log_path: Path, reason: str) -> None:
        super().__init__(f"{name} did not come up: {reason} (log: {log_path})")
        self.name = name
        self.log_path = log_path
        self.reason = reason


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in the background, its output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """True when `url` answers with a status below 500."""
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def wait_until_healthy(
    name: str,
    check: Callable[[], bool],
    *,
    log_path: Path,
    process: subprocess.Popen[bytes] | None = None,
    pid: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it passes; fail fast if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise PartFailed(name, log_path, f"exited with code {process.returncode}")
        if process is None and pid is not None and not pid_alive(pid):
            raise PartFailed(name, log_path, "process exited")
        if time.monotonic() > deadline:
            raise PartFailed(name, log_path, f"not healthy after {timeout:.0f} s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _not_zombie(pid)
    return waited == 0


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_process_group(pid: int, *, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL what is left after `grace`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _group_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Reap our own child if it is the leader, so a zombie does not count as alive.
    pid_alive(pgid)
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
