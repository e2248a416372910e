"""Slack's Web API methods that clrk uses, answering as Slack does.

Requests come as form fields or JSON (with the token in ``Authorization: Bearer`` or a
``token`` field); answers are ``200 {"ok": true, ...}`` or ``200 {"ok": false, "error":
...}``, except a rate limit, which is ``429`` with ``Retry-After``. So ``slack_sdk`` and any
other Slack client work against it unchanged.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clrk.slack.emulator.workspace import MAX_TEXT_CHARS, RateLimiter, Workspace

Params = dict[str, Any]
# Called with (channel, stored message) after the bot posts, to echo it as Slack does.
OnBotMessage = Callable[[str, dict[str, Any]], None]


@dataclass
class Failure:
    error: str
    retry_after_seconds: int = 1


@dataclass
class WebApi:
    workspace: Workspace
    token: str
    limiter: RateLimiter
    on_bot_message: OnBotMessage | None = None
    failures: dict[tuple[str, str], deque[Failure]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def inject_failure(self, method: str, channel: str, failure: Failure, count: int) -> None:
        queue = self.failures.setdefault((method, channel), deque())
        queue.extend(Failure(failure.error, failure.retry_after_seconds) for _ in range(count))

    async def handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await _params(request)
        token = _token(request, params)
        self.calls.append({"method": method, "channel": params.get("channel")})
        handler: Callable[[Params], Awaitable[Response]] | None = {
            "api.test": self.api_test,
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "conversations.replies": self.conversations_replies,
            "conversations.history": self.conversations_history,
        }.get(method)
        if handler is None:
            return _error("unknown_method", status=404)
        if method != "api.test":
            if not token:
                return _error("not_authed")
            if token != self.token:
                return _error("invalid_auth")
        return await handler(params)

    async def api_test(self, params: Params) -> Response:
        return _ok(args={k: v for k, v in params.items() if k != "token"})

    async def auth_test(self, params: Params) -> Response:
        ws = self.workspace
        return _ok(
            url="https://clrk-emulator.slack.localhost/",
            team="clrk emulator",
            user=ws.bot_name,
            team_id=ws.team_id,
            user_id=ws.bot_user_id,
            bot_id=ws.bot_id,
            is_enterprise_install=False,
        )

    async def chat_post_message(self, params: Params) -> Response:
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            return _error("channel_not_found")
        queue = self.failures.get(("chat.postMessage", channel))
        if queue:
            failure = queue.popleft()
            if failure.error == "ratelimited":
                return _rate_limited(failure.retry_after_seconds)
            return _error(failure.error)
        text = params.get("text")
        if not text and not params.get("blocks") and not params.get("attachments"):
            return _error("no_text")
        text = str(text or "")
        if len(text) > MAX_TEXT_CHARS:
            return _error("msg_too_long")
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return _error("invalid_metadata_format")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return _error("invalid_metadata_format")
        retry_after = self.limiter.retry_after(channel)
        if retry_after:
            return _rate_limited(retry_after)
        thread_ts = params.get("thread_ts") or None
        extra = {k: _json_field(params[k]) for k in ("blocks", "attachments") if k in params}
        message = self.workspace.bot_message(
            channel,
            text,
            thread_ts=str(thread_ts) if thread_ts else None,
            metadata=metadata,
            broadcast=_flag(params.get("reply_broadcast")),
            extra=extra,
        )
        if self.on_bot_message is not None:
            self.on_bot_message(channel, message)
        return _ok(channel=channel, ts=message["ts"], message=_visible(message, True))

    async def conversations_replies(self, params: Params) -> Response:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            return _error("channel_not_found")
        if not ts:
            return _error("invalid_arguments")
        messages = self.workspace.thread(str(channel), str(ts))
        if not messages:
            return _error("thread_not_found")
        try:
            messages = _window(messages, params)
        except ValueError:
            return _error("invalid_ts_oldest")
        return self._page(messages, params, default_limit=1000)

    async def conversations_history(self, params: Params) -> Response:
        channel = params.get("channel")
        if not channel:
            return _error("channel_not_found")
        try:
            messages = _window(self.workspace.history(str(channel)), params)
        except ValueError:
            return _error("invalid_ts_oldest")
        return self._page(messages, params, default_limit=100)

    def _page(self, messages: list[dict[str, Any]], params: Params, default_limit: int) -> Response:
        try:
            limit = max(1, min(int(params.get("limit") or default_limit), 1000))
            offset = _decode_cursor(params.get("cursor"))
        except ValueError:
            return _error("invalid_cursor")
        page = messages[offset : offset + limit]
        has_more = offset + limit < len(messages)
        metadata = _flag(params.get("include_all_metadata"))
        return _ok(
            messages=[_visible(m, metadata) for m in page],
            has_more=has_more,
            response_metadata={"next_cursor": _encode_cursor(offset + limit) if has_more else ""},
        )


async def _params(request: Request) -> Params:
    params: Params = dict(request.query_params)
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if isinstance(body, dict):
            params.update(body)
    else:
        # URL-encoded form, as slack_sdk and curl send it; read with the standard library
        # rather than adding python-multipart for a format no clrk caller uses.
        raw = (await request.body()).decode("utf-8", errors="strict")
        params.update(parse_qsl(raw, keep_blank_values=True))
    return params


def _token(request: Request, params: Params) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("token")
    return token if isinstance(token, str) and token else None


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _window(messages: list[dict[str, Any]], params: Params) -> list[dict[str, Any]]:
    """Keep messages between ``oldest`` and ``latest``; raises ValueError on a bad bound."""
    oldest, latest = params.get("oldest"), params.get("latest")
    float(oldest or 0), float(latest or 0)  # refuse a bad bound before filtering
    inclusive = _flag(params.get("inclusive"))

    def keep(m: dict[str, Any]) -> bool:
        ts = float(m["ts"])  # ordering only; the ts itself stays a string
        if oldest and (ts < float(oldest) or (ts == float(oldest) and not inclusive)):
            return False
        return not (latest and (ts > float(latest) or (ts == float(latest) and not inclusive)))

    return [m for m in messages if keep(m)]


def _visible(message: dict[str, Any], include_metadata: bool) -> dict[str, Any]:
    if include_metadata or "metadata" not in message:
        return dict(message)
    return {k: v for k, v in message.items() if k != "metadata"}


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: Any) -> int:
    if not cursor:
        return 0
    text = base64.urlsafe_b64decode(str(cursor).encode()).decode()
    if not text.startswith("offset:"):
        raise ValueError(cursor)
    return int(text.removeprefix("offset:"))


def _ok(**fields: Any) -> Response:
    return JSONResponse({"ok": True, **fields})


def _error(code: str, status: int = 200) -> Response:
    return JSONResponse({"ok": False, "error": code}, status_code=status)


def _rate_limited(retry_after_seconds: int) -> Response:
    return JSONResponse(
        {"ok": False, "error": "ratelimited"},
        status_code=429,
        headers={"Retry-After": str(retry_after_seconds)},
    )
