"""The ingress: HTTP in, CloudEvents envelope, durable inbox, ``202`` only once stored.

``POST /`` (or ``/invoke``) with ``X-Clrk-TaskAgent: <name>`` and a JSON object body. The
handlers raise clrk errors; the HTTP status of each is decided in one table
(:data:`STATUS_BY_ERROR`), and anything unforeseen is a ``500`` -- never a ``2xx`` for an
event that is not in the inbox. An agent with ``mode: sync`` is answered with its own
stdout JSON once its run has ended (the dispatcher runs it, possibly in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clrk import envelope
from clrk.errors import (
    BadRequest,
    ClrkError,
    ConfigError,
    PayloadTooLarge,
    StoreError,
    UnknownAgent,
)
from clrk.manifest import TaskAgent
from clrk.runtime.inbox import TERMINAL, Enqueued, Inbox
from clrk.runtime.partition import partition_key

logger = logging.getLogger(__name__)

AGENT_HEADER = "x-clrk-taskagent"
SOURCE_HEADER = "x-clrk-source"
TYPE_HEADER = "x-clrk-event-type"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
SYNC_POLL_SECONDS = 0.02

# The one place where errors become HTTP statuses; looked up along the error's MRO.
STATUS_BY_ERROR: dict[type[Exception], int] = {
    UnknownAgent: 404,
    BadRequest: 400,
    PayloadTooLarge: 413,
    StoreError: 503,  # the inbox cannot be written: the sender must retry
    ConfigError: 500,
}


def status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


class _InboxHolder:
    """Opens the inbox at startup, or later on demand if the database was down then."""

    def __init__(self, db_url: str, options: dict[str, Any]) -> None:
        self.db_url = db_url
        self.options = options
        self.inbox: Inbox | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Inbox:
        if self.inbox is not None:
            return self.inbox
        async with self._lock:
            if self.inbox is None:
                self.inbox = await asyncio.to_thread(Inbox.open, self.db_url, **self.options)
        return self.inbox

    async def close(self) -> None:
        if self.inbox is not None:
            await asyncio.to_thread(self.inbox.close)
            self.inbox = None


def create_app(
    db_url: str,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    sync_wait_seconds: float | None = None,
    store_options: dict[str, Any] | None = None,
) -> Starlette:
    """The ingress app over the inbox at ``db_url``.

    ``sync_wait_seconds`` bounds how long a ``mode: sync`` request waits (default: the
    agent's timeout times its attempts, plus backoff); past it the answer is ``504`` with
    the invocation id (the event is stored and will still run).
    """
    holder = _InboxHolder(db_url, store_options or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await holder.get()
        except StoreError as exc:
            logger.error("inbox unavailable at startup: %s", exc, extra={"action": "inbox_down"})
        try:
            yield
        finally:
            await holder.close()

    async def invoke(request: Request) -> Response:
        name = request.headers.get(AGENT_HEADER, "").strip()
        if not name:
            raise BadRequest("missing X-Clrk-TaskAgent header")
        body = envelope.parse_body(await _read_body(request, max_body_bytes))
        inbox = await holder.get()
        agent = await asyncio.to_thread(inbox.agent, name)
        event_id = envelope.event_id_for(request.headers, body)
        event = envelope.new_envelope(
            body,
            agent=name,
            event_id=event_id,
            source=request.headers.get(SOURCE_HEADER) or envelope.DEFAULT_SOURCE,
            type=request.headers.get(TYPE_HEADER) or envelope.DEFAULT_TYPE,
            traceparent=request.headers.get("traceparent"),
        )
        key = partition_key(agent.spec.partition_key, envelope.to_dict(event))
        event = envelope.with_subject(event, key)
        stored = await asyncio.to_thread(
            inbox.enqueue,
            agent,
            event_id=event_id,
            partition_key=key,
            envelope=envelope.to_json(event).decode(),
        )
        if agent.spec.mode == "sync":
            return await _wait_for_outcome(inbox, agent, stored, sync_wait_seconds)
        return JSONResponse(
            {
                "invocation_id": stored.invocation_id,
                "duplicate": stored.duplicate,
                "status": stored.status,
            },
            status_code=202,
        )

    async def health(request: Request) -> Response:
        await holder.get()
        return JSONResponse({"ok": True})

    async def on_error(request: Request, exc: Exception) -> Response:
        status = status_for(exc)
        if status >= 500:
            logger.warning("ingress %d: %s", status, exc, extra={"action": "ingress_error"})
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=status)

    return Starlette(
        routes=[
            Route("/", invoke, methods=["POST"]),
            Route("/invoke", invoke, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={ClrkError: on_error},
        lifespan=lifespan,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
    return bytes(body)


async def _wait_for_outcome(
    inbox: Inbox, agent: TaskAgent, stored: Enqueued, wait_seconds: float | None
) -> Response:
    """Poll the inbox until the run has ended; answer with the agent's stdout JSON."""
    if wait_seconds is None:
        retries = agent.spec.retries
        attempts = retries.max_retries + 1
        wait_seconds = agent.spec.timeout_seconds * attempts + retries.backoff_seconds * (
            2**attempts
        )
    invocation_id = stored.invocation_id
    deadline = time.monotonic() + wait_seconds
    while True:
        row = await asyncio.to_thread(inbox.invocation, invocation_id)
        if row is not None and row["status"] == "coalesced" and row["coalesced_into"]:
            invocation_id = row["coalesced_into"]  # its outcome is the leader's
            continue
        if row is not None and row["status"] in TERMINAL:
            break
        if time.monotonic() >= deadline:
            return JSONResponse(
                {"invocation_id": stored.invocation_id, "status": row and row["status"]},
                status_code=504,
            )
        await asyncio.sleep(SYNC_POLL_SECONDS)
    if row["status"] == "succeeded":
        return Response(
            row["result"],
            media_type="application/json",
            headers={"x-clrk-invocation-id": stored.invocation_id},
        )
    status = 409 if row["status"] == "rejected" else 502
    return JSONResponse(
        {
            "invocation_id": stored.invocation_id,
            "status": row["status"],
            "reason": row["reason"],
            "stderr_tail": row["stderr_tail"],
        },
        status_code=status,
    )
