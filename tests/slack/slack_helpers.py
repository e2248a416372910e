"""Helpers for the Slack tests: real servers on free ports, signing, an ingress stand-in."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIXTURE_SECRET = "f00dfacecafebeef0123456789abcdef"
FIXTURE_TIMESTAMP = 1784021600


class FixedClock(Clock):
    """The clock the known-answer signatures were made at (slack_sdk's injectable clock)."""

    def __init__(self, now: float = FIXTURE_TIMESTAMP) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/json",
    }


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class IngressStandIn:
    """A small ingress that keeps what it receives and dedupes on X-Clrk-Event-Id.

    ``status`` is what it answers (202 by default); ``delay_seconds`` makes it slow.
    """

    status: int = 202
    delay_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)

    def app(self) -> Starlette:
        import asyncio

        async def receive(request: Request) -> Response:
            body = await request.body()
            self.requests.append({"headers": dict(request.headers), "body": body})
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if self.status >= 300:
                return JSONResponse({"error": "stand-in says no"}, status_code=self.status)
            event_id = request.headers["x-clrk-event-id"]
            duplicate = event_id in self.stored
            self.stored.setdefault(event_id, body)
            return JSONResponse(
                {"invocation_id": f"inv-{event_id}", "duplicate": duplicate},
                status_code=self.status,
            )

        return Starlette(routes=[Route("/", receive, methods=["POST"])])


@dataclass
class Receiver:
    """A Request URL stand-in: verifies each delivery with slack_sdk and records it.

    ``script`` gives, per arrival, ``(status, delay_seconds)``; after it runs out: 200.
    """

    secret: str
    script: list[tuple[int, float]] = field(default_factory=list)
    arrivals: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        import asyncio
        import json

        async def receive(request: Request) -> Response:
            body = await request.body()
            verifier = SignatureVerifier(self.secret)
            self.arrivals.append(
                {
                    "headers": dict(request.headers),
                    "body": body,
                    "json": json.loads(body),
                    "valid": verifier.is_valid_request(body, dict(request.headers)),
                }
            )
            status, delay = self.script.pop(0) if self.script else (200, 0.0)
            if delay:
                await asyncio.sleep(delay)
            return Response(status_code=status)

        return Starlette(routes=[Route("/", receive, methods=["POST"])])


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until ``predicate()`` is true; a wait, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
