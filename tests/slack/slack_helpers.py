"""Helpers for the Slack tests: real servers on free ports, signing, an ingress stand-in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

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
