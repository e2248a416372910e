"""The emulated workspace: channels and their messages, in memory.

Permissive like a development workspace: a channel id is created on first use, and a
thread lists its replies even when its parent message was never posted here (a test may
have sent the parent's event straight to the proxy).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# chat.postMessage refuses longer text with msg_too_long.
MAX_TEXT_CHARS = 40_000


def channel_type(channel: str) -> str:
    """Slack's channel_type as read from the id's first letter."""
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def is_top_level(message: dict[str, Any]) -> bool:
    thread_ts = message.get("thread_ts")
    return (
        thread_ts is None
        or thread_ts == message["ts"]
        or message.get("subtype") == ("thread_broadcast")
    )


@dataclass
class Workspace:
    """Messages per channel, kept in ``ts`` order; ``ts`` values are unique and increasing."""

    team_id: str
    bot_user_id: str
    bot_id: str
    app_id: str
    bot_name: str = "thread-agent"
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _last_ts: tuple[int, int] = (0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_ts(self) -> str:
        now = time.time()
        seconds, micros = int(now), int((now % 1) * 1_000_000)
        with self._lock:
            if (seconds, micros) <= self._last_ts:
                seconds, micros = self._last_ts[0], self._last_ts[1] + 1
                if micros >= 1_000_000:
                    seconds, micros = seconds + 1, 0
            self._last_ts = (seconds, micros)
        return f"{seconds}.{micros:06d}"

    def channel(self, channel: str) -> list[dict[str, Any]]:
        return self.channels.setdefault(channel, [])

    def add(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Store a message (it has its ``ts``) and update its thread parent's counters."""
        messages = self.channel(channel)
        messages.append(message)
        messages.sort(key=lambda m: _ts_order(m["ts"]))
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != message["ts"]:
            parent = self.find(channel, thread_ts)
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                if message.get("user") and message["user"] not in users:
                    users.append(message["user"])
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = message["ts"]
        return message

    def user_message(
        self, channel: str, text: str, user: str, thread_ts: str | None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "text": text,
            "user": user,
            "ts": self.next_ts(),
            "team": self.team_id,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
            parent = self.find(channel, thread_ts)
            if parent is not None and parent.get("user"):
                message["parent_user_id"] = parent["user"]
        return self.add(channel, message)

    def bot_message(
        self,
        channel: str,
        text: str,
        *,
        thread_ts: str | None,
        metadata: dict[str, Any] | None,
        broadcast: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "text": text,
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "ts": self.next_ts(),
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": self.bot_name,
                "team_id": self.team_id,
                "deleted": False,
            },
            **(extra or {}),
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
            parent = self.find(channel, thread_ts)
            if parent is not None and parent.get("user"):
                message["parent_user_id"] = parent["user"]
            if broadcast:
                message["subtype"] = "thread_broadcast"
        if metadata:
            message["metadata"] = metadata
        return self.add(channel, message)

    def find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for message in self.channels.get(channel, ()):
            if message["ts"] == ts:
                return message
        return None

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The parent (when known) and then its replies, oldest first."""
        return [
            m
            for m in self.channels.get(channel, ())
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages (and broadcast replies), newest first, as Slack lists them."""
        return [m for m in reversed(self.channels.get(channel, ())) if is_top_level(m)]


def _ts_order(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


@dataclass
class RateLimiter:
    """A sliding one-minute window per channel; ``None`` means no limit."""

    per_minute: int | None
    _sent: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, channel: str, now: float | None = None) -> int:
        """0 when a post may go now (and count it), else whole seconds to wait."""
        if self.per_minute is None:
            return 0
        now = time.monotonic() if now is None else now
        window = self._sent.setdefault(channel, deque())
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return max(1, int(60 - (now - window[0]) + 0.999))
        window.append(now)
        return 0
