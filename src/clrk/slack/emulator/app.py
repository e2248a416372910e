"""The emulator app: Slack's Web API under ``/api/``, test controls under ``/_emulator/``,
and a small page at ``/`` to chat with an agent by hand.

A fake, named as such: it stands in for Slack only, for development and tests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from clrk.slack.emulator.delivery import SLACK_RETRY_DELAYS_SECONDS, Deliverer
from clrk.slack.emulator.webapi import Failure, WebApi
from clrk.slack.emulator.workspace import RateLimiter, Workspace, channel_type

DEFAULT_TEAM_ID = "T07ZK4QW9PL"
DEFAULT_APP_ID = "A07ZN2BQ5RT"
DEFAULT_BOT_USER_ID = "U07ZN3CDV8X"
DEFAULT_BOT_ID = "B07ZN3CDUQ4"
DEFAULT_BOT_TOKEN = "xoxb-emulator-0000000000-clrk-local-only"
DEFAULT_USER_ID = "U05HX8T2LMQ"
DEFAULT_CHANNELS = {"C07ZP1MEH5S": "proj-support", "D07ZN4F2Q1A": "dm-thread-agent"}
_EVENT_ID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


# Channel (C), DM (D) and group (G) ids; message timestamps are "seconds.micros" strings.
CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]+")
MESSAGE_TS = re.compile(r"\d+\.\d+")


class _BadInput(ValueError):
    pass


class Emulator:
    """The workspace, the Web API over it, and the event sender; one per app."""

    def __init__(
        self,
        *,
        signing_secret: str,
        request_url: str | None,
        team_id: str,
        app_id: str,
        bot_user_id: str,
        bot_id: str,
        bot_token: str,
        rate_limit_per_minute: int | None,
        ack_timeout_seconds: float,
        max_retries: int,
        retry_delays_seconds: Sequence[float],
        echo_bot_messages: bool,
    ) -> None:
        self.workspace = Workspace(
            team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, app_id=app_id
        )
        for channel in DEFAULT_CHANNELS:
            self.workspace.channel(channel)
        self.names = dict(DEFAULT_CHANNELS)
        self.deliverer = Deliverer(
            signing_secret=signing_secret,
            request_url=request_url,
            ack_timeout_seconds=ack_timeout_seconds,
            max_retries=max_retries,
            retry_delays_seconds=retry_delays_seconds,
        )
        self.echo_bot_messages = echo_bot_messages
        self.api = WebApi(
            workspace=self.workspace,
            token=bot_token,
            limiter=RateLimiter(rate_limit_per_minute),
            on_bot_message=self._echo,
        )

    # --- events -------------------------------------------------------------------------

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        ws = self.workspace
        event_id = "Ev" + "".join(secrets.choice(_EVENT_ID_ALPHABET) for _ in range(10))
        context = json.dumps({"et": event["type"], "tid": ws.team_id, "aid": ws.app_id})
        return {
            "token": "emulator-verification-token",
            "team_id": ws.team_id,
            "context_team_id": ws.team_id,
            "context_enterprise_id": None,
            "api_app_id": ws.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": ws.team_id,
                    "user_id": ws.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + base64.urlsafe_b64encode(context.encode()).decode(),
        }

    def message_events(self, channel: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The events Slack sends for one new message: ``app_mention`` too when it names us."""
        event = {k: v for k, v in message.items() if k not in _STORE_ONLY}
        event.update(channel=channel, event_ts=message["ts"], channel_type=channel_type(channel))
        if message.get("user") and "bot_id" not in message:
            event["client_msg_id"] = str(uuid.uuid4())
        events = [event]
        mention = f"<@{self.workspace.bot_user_id}>"
        if channel_type(channel) != "im" and mention in message.get("text", ""):
            as_mention = {k: v for k, v in event.items() if k != "channel_type"}
            as_mention["type"] = "app_mention"
            events.insert(0, as_mention)
        return events

    def say(self, channel: str, text: str, user: str, thread_ts: str | None) -> dict[str, Any]:
        message = self.workspace.user_message(channel, text, user, thread_ts)
        event_ids = [
            self.deliverer.schedule(self.envelope(event))
            for event in self.message_events(channel, message)
        ]
        return {"ok": True, "ts": message["ts"], "channel": channel, "event_ids": event_ids}

    def _echo(self, channel: str, message: dict[str, Any]) -> None:
        # Slack sends the bot's own posts back as message events; receivers must drop them.
        if self.echo_bot_messages:
            for event in self.message_events(channel, message):
                self.deliverer.schedule(self.envelope(event))

    # --- /_emulator/ endpoints ----------------------------------------------------------

    async def say_endpoint(self, request: Request) -> Response:
        body = await _json_object(request)
        channel = _required_str(body, "channel")
        if not CHANNEL_ID.fullmatch(channel):
            raise _BadInput(
                f"channel {channel!r} is not a Slack conversation id (like C07ZP1MEH5S)"
            )
        text = _required_str(body, "text")
        user = _optional_str(body, "user") or DEFAULT_USER_ID
        thread_ts = _optional_str(body, "thread_ts")
        if thread_ts is not None and not MESSAGE_TS.fullmatch(thread_ts):
            raise _BadInput(f"thread_ts {thread_ts!r} is not a Slack ts (like 1784021532.401829)")
        return JSONResponse(self.say(channel, text, user, thread_ts))

    async def redeliver(self, request: Request) -> Response:
        body = await _json_object(request)
        event_id = _required_str(body, "event_id")
        if event_id not in self.deliverer.bodies:
            return JSONResponse({"ok": False, "error": "unknown_event_id"}, status_code=404)
        retry_num = body.get("retry_num", 1)
        if not isinstance(retry_num, int) or retry_num < 0:
            raise _BadInput("retry_num must be a non-negative integer")
        reason = _optional_str(body, "reason") or "http_timeout"
        record = await self.deliverer.send(event_id, retry_num=retry_num, reason=reason)
        return JSONResponse({"ok": True, "delivery": record})

    async def deliveries(self, request: Request) -> Response:
        event_id = request.query_params.get("event_id")
        rows = [d for d in self.deliverer.deliveries if event_id in (None, d["event_id"])]
        return JSONResponse({"ok": True, "deliveries": rows})

    async def messages(self, request: Request) -> Response:
        channel = request.query_params.get("channel")
        thread_ts = request.query_params.get("thread_ts")
        if thread_ts and not channel:
            raise _BadInput("thread_ts needs channel")
        channels = [channel] if channel else list(self.workspace.channels)
        rows = []
        for name in channels:
            found = (
                self.workspace.thread(name, thread_ts)
                if thread_ts
                else self.workspace.channels.get(name, [])
            )
            rows.extend({**m, "channel": name} for m in found)
        return JSONResponse({"ok": True, "messages": rows})

    async def channels(self, request: Request) -> Response:
        rows = [
            {"id": cid, "name": self.names.get(cid, cid), "message_count": len(msgs)}
            for cid, msgs in self.workspace.channels.items()
        ]
        return JSONResponse({"ok": True, "channels": rows})

    async def failures(self, request: Request) -> Response:
        body = await _json_object(request)
        channel = _required_str(body, "channel")
        error = _required_str(body, "error")
        method = _optional_str(body, "method") or "chat.postMessage"
        count, retry_after = body.get("count", 1), body.get("retry_after", 1)
        if not isinstance(count, int) or count < 1:
            raise _BadInput("count must be a positive integer")
        if not isinstance(retry_after, int) or retry_after < 0:
            raise _BadInput("retry_after must be a non-negative integer")
        self.api.inject_failure(method, channel, Failure(error, retry_after), count)
        return JSONResponse({"ok": True})

    async def info(self, request: Request) -> Response:
        ws = self.workspace
        return JSONResponse(
            {
                "ok": True,
                "team_id": ws.team_id,
                "app_id": ws.app_id,
                "bot_user_id": ws.bot_user_id,
                "bot_id": ws.bot_id,
                "bot_name": ws.bot_name,
                "default_user": DEFAULT_USER_ID,
                "request_url": self.deliverer.request_url,
            }
        )

    async def config(self, request: Request) -> Response:
        """Point deliveries at another Request URL (``clrk up`` learns it after start)."""
        body = await _json_object(request)
        self.deliverer.request_url = _optional_str(body, "request_url")
        return await self.info(request)

    async def page(self, request: Request) -> Response:
        html = resources.files("clrk.slack.emulator").joinpath("page.html").read_text("utf-8")
        return HTMLResponse(html)


# Fields the emulator keeps on a stored message that Slack does not put in the event.
_STORE_ONLY = frozenset({"reply_count", "reply_users", "reply_users_count", "latest_reply"})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _BadInput("body must be JSON") from exc
    if not isinstance(body, dict):
        raise _BadInput("body must be a JSON object")
    return body


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _BadInput(f"{name} is required (a non-empty string)")
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _BadInput(f"{name} must be a string (Slack ts values are strings)")
    return value


async def _bad_input(request: Request, exc: Exception) -> Response:
    return JSONResponse({"ok": False, "error": "invalid_arguments", "detail": str(exc)}, 400)


def create_app(
    *,
    signing_secret: str,
    request_url: str | None,
    team_id: str = DEFAULT_TEAM_ID,
    app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    bot_id: str = DEFAULT_BOT_ID,
    bot_token: str = DEFAULT_BOT_TOKEN,
    rate_limit_per_minute: int | None = None,
    ack_timeout_seconds: float = 3.0,
    max_retries: int = 3,
    retry_delays_seconds: Sequence[float] = SLACK_RETRY_DELAYS_SECONDS,
    echo_bot_messages: bool = True,
) -> Starlette:
    """Build the emulator. ``request_url`` is where events go (the auth proxy), or None.

    ``retry_delays_seconds`` are the waits before retries 1, 2, 3 (Slack: 0, 60, 300 s).
    The emulator itself is reachable at ``app.state.emulator`` for in-process tests.
    """
    if not signing_secret:
        raise ValueError("signing_secret is required (SLACK_SIGNING_SECRET)")
    emulator = Emulator(
        signing_secret=signing_secret,
        request_url=request_url,
        team_id=team_id,
        app_id=app_id,
        bot_user_id=bot_user_id,
        bot_id=bot_id,
        bot_token=bot_token,
        rate_limit_per_minute=rate_limit_per_minute,
        ack_timeout_seconds=ack_timeout_seconds,
        max_retries=max_retries,
        retry_delays_seconds=retry_delays_seconds,
        echo_bot_messages=echo_bot_messages,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await emulator.deliverer.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/", emulator.page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/api/{method}", emulator.api.handle, methods=["GET", "POST"]),
            Route("/_emulator/say", emulator.say_endpoint, methods=["POST"]),
            Route("/_emulator/redeliver", emulator.redeliver, methods=["POST"]),
            Route("/_emulator/deliveries", emulator.deliveries, methods=["GET"]),
            Route("/_emulator/messages", emulator.messages, methods=["GET"]),
            Route("/_emulator/channels", emulator.channels, methods=["GET"]),
            Route("/_emulator/failures", emulator.failures, methods=["POST"]),
            Route("/_emulator/info", emulator.info, methods=["GET"]),
            Route("/_emulator/config", emulator.config, methods=["POST"]),
        ],
        exception_handlers={_BadInput: _bad_input},
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    return app
