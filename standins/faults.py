"""Fault injection and health for the stand-ins, as ASGI middleware.

Tests and the demo ask a stand-in to misbehave the way the real vendor sometimes does:

    POST   /_standin/faults   {"kind": "429", "path": "/v1/invoices", "method": "POST",
                                "count": 1, "retry_after": 2}
    DELETE /_standin/faults   clears every fault
    GET    /_standin/health   {"ok": true}

kinds: "429" (with `Retry-After`), any other HTTP error status such as "400", "402" or
"500" (a permanent or a transient refusal, in the vendor's error shape), "latency" (answer
normally after `delay` seconds), "timeout" (hold the request for `delay` seconds, default
30, then 504).
A fault matches requests whose path starts with `path` (and whose method is `method`,
when given) and applies to the next `count` of them (default 1; 0 means until cleared).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

CONTROL_PREFIX = "/_standin"

#: Builds the vendor's error body for an injected status: (status, message) -> JSON.
ErrorBody = Callable[[int, str], Any]


@dataclass
class Fault:
    kind: str
    path: str = "/"
    method: str | None = None
    count: int = 1
    retry_after: float = 1.0
    delay: float = 30.0

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path) and (self.method is None or self.method == method)


class FaultInjector:
    def __init__(self, app: ASGIApp, *, error_body: ErrorBody) -> None:
        self.app = app
        self.error_body = error_body
        self.faults: list[Fault] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith(CONTROL_PREFIX):
            await self._control(method, path, receive, send)
            return
        fault = self._take(method, path)
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
        elif fault.kind == "timeout":
            await asyncio.sleep(fault.delay)
            await self._respond(send, 504, self.error_body(504, "Gateway timeout (injected)"))
        elif fault.kind == "429":
            headers = [(b"retry-after", str(int(fault.retry_after)).encode())]
            body = self.error_body(429, "Too many requests (injected)")
            await self._respond(send, 429, body, headers)
        else:
            status = int(fault.kind)
            message = "Refused (injected)" if status < 500 else "Server error (injected)"
            await self._respond(send, status, self.error_body(status, message))

    def _take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                return fault
        return None

    async def _control(self, method: str, path: str, receive: Receive, send: Send) -> None:
        if path == f"{CONTROL_PREFIX}/health":
            await self._respond(send, 200, {"ok": True})
        elif path == f"{CONTROL_PREFIX}/faults" and method == "POST":
            raw = await _read_body(receive)
            try:
                spec = json.loads(raw or b"{}")
                fault = Fault(**spec)
                if fault.kind not in ("latency", "timeout") and not (
                    fault.kind.isdigit() and 400 <= int(fault.kind) <= 599
                ):
                    raise ValueError(f"unknown fault kind {fault.kind!r}")
            except (TypeError, ValueError) as exc:
                await self._respond(send, 400, {"error": str(exc)})
                return
            self.faults.append(fault)
            await self._respond(send, 201, {"faults": len(self.faults)})
        elif path == f"{CONTROL_PREFIX}/faults" and method == "DELETE":
            self.faults.clear()
            await self._respond(send, 200, {"faults": 0})
        else:
            await self._respond(send, 404, {"error": "unknown control endpoint"})

    @staticmethod
    async def _respond(
        send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
