"""The auth proxy: the only place a Slack signature is checked.

Slack posts events here. Each is verified with ``slack_sdk``'s :class:`SignatureVerifier`
over the raw bytes as they arrived, read by the event adapter, and forwarded byte for byte
to the ingress with the agent's name and a dedupe id. Slack gets ``200`` only once the
ingress has answered ``2xx`` (the event is durably stored), and ``503`` otherwise, so that
Slack retries; retries carry the same ``X-Clrk-Event-Id`` and the ingress drops them.

Rejections are told apart (stale or future timestamp, mismatched signature, missing
headers, bad body, too large) in logs and in the counters served at ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clrk import envelope
from clrk.errors import BadRequest
from clrk.slack.events import Ignored, parse_event
from clrk.state.values import text_problem

logger = logging.getLogger("clrk.slack.proxy")

SIGNATURE_WINDOW_SECONDS = 300  # slack_sdk's own window; used only to name the rejection
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_FORWARD_TIMEOUT_SECONDS = 2.5  # leaves room inside Slack's 3 s for our own work
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

METRIC_NAMES = (
    "received",
    "retries_received",
    "url_verification",
    "forwarded",
    "ignored",
    "unrouted",
    "rejected_missing_headers",
    "rejected_bad_timestamp",
    "rejected_stale_timestamp",
    "rejected_future_timestamp",
    "rejected_bad_signature",
    "rejected_bad_body",
    "rejected_too_large",
    "ingress_refused",
    "ingress_unavailable",
)


class _TooLarge(Exception):
    pass


class _Proxy:
    """Request handling and its counters; the Starlette app is a thin shell over it."""

    def __init__(
        self,
        *,
        signing_secret: str,
        ingress_url: str,
        routes: dict[str, str] | str,
        bot_user_id: str | None,
        bot_id: str | None,
        clock: Clock,
        max_body_bytes: int,
        forward_timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.verifier = SignatureVerifier(signing_secret, clock=clock)
        self.clock = clock
        self.ingress_url = ingress_url.rstrip("/") + "/"
        self.routes = routes
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.max_body_bytes = max_body_bytes
        self.forward_timeout_seconds = forward_timeout_seconds
        self.transport = transport
        self.metrics: dict[str, int] = dict.fromkeys(METRIC_NAMES, 0)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use so that the app also works without a lifespan
        # (httpx's ASGITransport does not run one).
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport, timeout=self.forward_timeout_seconds
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _count(self, name: str) -> None:
        self.metrics[name] += 1

    def _reject(self, status: int, metric: str, message: str, **extra: Any) -> Response:
        self._count(metric)
        logger.warning("slack request rejected: %s", message, extra={"action": metric, **extra})
        return PlainTextResponse(message, status_code=status)

    async def handle(self, request: Request) -> Response:
        self._count("received")
        retry_num = request.headers.get("x-slack-retry-num")
        if retry_num is not None:
            self._count("retries_received")
        timestamp = request.headers.get("x-slack-request-timestamp")
        signature = request.headers.get("x-slack-signature")
        if not timestamp or not signature:
            return self._reject(
                401, "rejected_missing_headers", "missing X-Slack-Request-Timestamp or Signature"
            )
        try:
            body = await self._read_body(request)
        except _TooLarge:
            return self._reject(
                413, "rejected_too_large", f"body larger than {self.max_body_bytes} bytes"
            )
        denial = self._verify(body, timestamp, signature)
        if denial is not None:
            return denial
        try:
            # The ingress's own parser: what it would refuse (not JSON, nested too deeply,
            # text that is not valid Unicode) is refused here too, as a 400, not a 500.
            payload = envelope.parse_body(body)
        except BadRequest as exc:
            return self._reject(400, "rejected_bad_body", str(exc))

        if payload.get("type") == "url_verification":
            self._count("url_verification")
            return JSONResponse({"challenge": payload.get("challenge", "")})

        result = parse_event(payload, bot_user_id=self.bot_user_id, bot_id=self.bot_id)
        if isinstance(result, Ignored):
            self._count("ignored")
            logger.info(
                "slack event ignored: %s",
                result.reason,
                extra={"action": "ignored", "event_id": result.event_id, "key": result.key},
            )
            return Response(status_code=200)

        problem = text_problem(result.dedupe_id) or text_problem(result.key)
        if problem is not None:  # it would be a header and a key: no store can keep it
            return self._reject(400, "rejected_bad_body", f"event ids hold {problem}")
        agent = self._route(payload)
        if agent is None:
            return self._reject(
                404,
                "unrouted",
                "no TaskAgent configured for this app or team",
                api_app_id=payload.get("api_app_id"),
                team_id=payload.get("team_id"),
            )
        return await self._forward(
            body,
            agent=agent,
            event_id=result.dedupe_id,
            key=result.key,
            traceparent=request.headers.get("traceparent"),
            retry_num=retry_num,
        )

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _verify(self, body: bytes, timestamp: str, signature: str) -> Response | None:
        """Let slack_sdk decide; only when it refuses do we work out why, for the logs."""
        try:
            sent_at = int(timestamp)
        except ValueError:
            return self._reject(401, "rejected_bad_timestamp", "timestamp is not an integer")
        try:
            # Slack's signatures are ASCII hex; slack_sdk's compare_digest raises TypeError
            # (a 500 here) on a header with other characters, which can never match anyway.
            valid = signature.isascii() and self.verifier.is_valid(body, timestamp, signature)
        except UnicodeDecodeError:
            valid = False  # Slack sends UTF-8; other bytes cannot carry its signature
        if valid:
            return None
        skew = self.clock.now() - sent_at
        if skew > SIGNATURE_WINDOW_SECONDS:
            return self._reject(
                401, "rejected_stale_timestamp", "stale timestamp", skew_seconds=round(skew)
            )
        if skew < -SIGNATURE_WINDOW_SECONDS:
            return self._reject(
                401,
                "rejected_future_timestamp",
                "timestamp in the future",
                skew_seconds=round(skew),
            )
        return self._reject(401, "rejected_bad_signature", "signature mismatch")

    def _route(self, payload: dict[str, Any]) -> str | None:
        if isinstance(self.routes, str):
            return self.routes
        for key in (payload.get("api_app_id"), payload.get("team_id"), "*"):
            if isinstance(key, str) and key in self.routes:
                return self.routes[key]
        return None

    async def _forward(
        self,
        body: bytes,
        *,
        agent: str,
        event_id: str,
        key: str,
        traceparent: str | None,
        retry_num: str | None,
    ) -> Response:
        if not traceparent or not _TRACEPARENT.match(traceparent):
            traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        headers = {
            "Content-Type": "application/json",
            "X-Clrk-TaskAgent": agent,
            "X-Clrk-Event-Id": event_id,
            "traceparent": traceparent,
        }
        extra = {"event_id": event_id, "key": key, "agent": agent, "retry_num": retry_num}
        started = time.monotonic()
        try:
            answer = await self.client.post(self.ingress_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._count("ingress_unavailable")
            logger.error(
                "ingress unreachable: %s",
                exc.__class__.__name__,
                extra={"action": "ingress_unavailable", **extra},
            )
            return PlainTextResponse("ingress unavailable", status_code=503)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        if not answer.is_success:
            self._count("ingress_refused")
            logger.error(
                "ingress answered %s",
                answer.status_code,
                extra={"action": "ingress_refused", "status": answer.status_code, **extra},
            )
            return PlainTextResponse(f"ingress answered {answer.status_code}", status_code=503)
        self._count("forwarded")
        logger.info(
            "slack event forwarded",
            extra={"action": "forwarded", "elapsed_ms": elapsed_ms, **extra},
        )
        return Response(status_code=200)


def create_app(
    *,
    signing_secret: str,
    ingress_url: str,
    routes: dict[str, str] | str,
    bot_user_id: str | None = None,
    bot_id: str | None = None,
    clock: Clock | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    forward_timeout_seconds: float = DEFAULT_FORWARD_TIMEOUT_SECONDS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the proxy app.

    ``routes`` maps an ``api_app_id`` or ``team_id`` (or ``"*"``) to a TaskAgent name, or
    is one name for every event. ``clock`` is for tests replaying fixed timestamps;
    ``transport`` wires the proxy to an in-process ingress (httpx ``ASGITransport``).
    """
    if not signing_secret:
        raise ValueError("signing_secret is required (SLACK_SIGNING_SECRET)")
    if not routes:
        raise ValueError("routes: name at least one TaskAgent")
    proxy = _Proxy(
        signing_secret=signing_secret,
        ingress_url=ingress_url,
        routes=routes,
        bot_user_id=bot_user_id,
        bot_id=bot_id,
        clock=clock or Clock(),
        max_body_bytes=max_body_bytes,
        forward_timeout_seconds=forward_timeout_seconds,
        transport=transport,
    )

    async def metrics(request: Request) -> Response:
        return JSONResponse(proxy.metrics)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await proxy.aclose()

    app = Starlette(
        routes=[
            Route("/", proxy.handle, methods=["POST"]),
            Route("/slack/events", proxy.handle, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    app.state.metrics = proxy.metrics
    return app
