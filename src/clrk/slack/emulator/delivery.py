"""Delivering events as Slack does: signed, compact JSON, retried when not acknowledged.

Slack expects a ``2xx`` within 3 s. Otherwise it sends the same body (same ``event_id``)
again, signed anew, with ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason``, up to three
times: nearly at once, after a minute, after five minutes. The waits are configurable so
that tests and demos need not wait minutes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier

logger = logging.getLogger("clrk.slack.emulator")

SLACK_RETRY_DELAYS_SECONDS = (0.0, 60.0, 300.0)
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def wire_bytes(body: dict[str, Any]) -> bytes:
    """Compact JSON with ``\\/`` and ``\\uXXXX`` escapes, the way Slack's captures look.

    Receivers must verify these exact bytes; the escapes make a re-encoding proxy fail
    loudly in development rather than in production. Replacing ``/`` is safe: outside
    strings JSON has no slash.
    """
    return json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode("ascii")


class Deliverer:
    """Sends event bodies to the Request URL and records every attempt."""

    def __init__(
        self,
        *,
        signing_secret: str,
        request_url: str | None,
        ack_timeout_seconds: float,
        max_retries: int,
        retry_delays_seconds: Sequence[float],
    ) -> None:
        self.signer = SignatureVerifier(signing_secret)
        self.request_url = request_url
        self.ack_timeout_seconds = ack_timeout_seconds
        self.max_retries = max_retries
        self.retry_delays_seconds = tuple(retry_delays_seconds) or (0.0,)
        self.deliveries: list[dict[str, Any]] = []
        self.bodies: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.ack_timeout_seconds)
        return self._client

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def schedule(self, body: dict[str, Any]) -> str:
        """Remember the body and deliver it in the background (with retries)."""
        event_id = body["event_id"]
        self.bodies[event_id] = wire_bytes(body)
        if self.request_url:
            task = asyncio.get_running_loop().create_task(self._deliver(event_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return event_id

    async def _deliver(self, event_id: str) -> None:
        record = await self.send(event_id)
        retry = 0
        while not record["ok"] and retry < self.max_retries:
            retry += 1
            delay = self.retry_delays_seconds[min(retry, len(self.retry_delays_seconds)) - 1]
            await asyncio.sleep(delay)
            record = await self.send(event_id, retry_num=retry, reason=record["reason"])

    async def send(
        self, event_id: str, *, retry_num: int = 0, reason: str | None = None
    ) -> dict[str, Any]:
        """One attempt, signed now; the record says whether it was acknowledged and why not."""
        body = self.bodies[event_id]
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": self.signer.generate_signature(timestamp=timestamp, body=body)
            or "",
        }
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = reason or "http_timeout"
        record: dict[str, Any] = {
            "event_id": event_id,
            "event_type": json.loads(body).get("event", {}).get("type"),
            "attempt": retry_num + 1,
            "retry_num": retry_num,
            "retry_reason": headers.get("X-Slack-Retry-Reason"),
            "status": None,
            "ok": False,
            "reason": None,
            "latency_ms": None,
            "at": time.time(),
        }
        started = time.monotonic()
        try:
            if not self.request_url:
                raise httpx.InvalidURL("no Request URL configured")
            answer = await self.client.post(self.request_url, content=body, headers=headers)
        except httpx.TimeoutException:
            record["reason"] = "http_timeout"
        except (httpx.ConnectError, httpx.InvalidURL, httpx.UnsupportedProtocol):
            record["reason"] = "connection_failed"
        except httpx.HTTPError:
            record["reason"] = "unknown_error"
        else:
            record["status"] = answer.status_code
            record["ok"] = answer.is_success
            record["reason"] = None if answer.is_success else "http_error"
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        self.deliveries.append(record)
        logger.info(
            "event delivery %s",
            "acknowledged" if record["ok"] else f"failed: {record['reason']}",
            extra={"action": "delivery", **record},
        )
        return record
