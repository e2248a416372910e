"""``clrk slack say``: one user message into the running stack, then wait for the reply."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from clrk.errors import ConfigError
from clrk.stack import BOT_USER_ID, StackError, StackInfo, readable

POLL_SECONDS = 0.2


def replies_to(messages: list[dict[str, Any]], ts: str) -> list[dict[str, Any]]:
    """The bot's reply to the message ``ts``, in its parts.

    clrk's agent names the messages it answers in the reply's metadata (``answers``), so
    with several messages in flight on one thread each sender finds its own answer. A bot
    message without that metadata (another agent) counts when it came after ``ts``.
    """
    found = []
    for m in messages:
        if not (m.get("bot_id") or m.get("user") == BOT_USER_ID):
            continue
        payload = (m.get("metadata") or {}).get("event_payload") or {}
        if "answers" in payload:
            if ts in str(payload["answers"]).split(","):
                found.append(m)
        elif float(m["ts"]) > float(ts):
            found.append(m)
    return found


def say(
    home: Path,
    *,
    channel: str,
    text: str,
    thread_ts: str | None = None,
    user: str = "U05HX8T2LMQ",
    timeout_seconds: float = 60.0,
) -> int:
    """Deliver ``text`` through the emulator (signed, as Slack would) and print the reply."""
    if not text.strip():
        raise ConfigError("the message text is empty")
    info = StackInfo.load(home)
    try:
        return _say(info, channel, text, thread_ts, user, timeout_seconds)
    except httpx.TransportError as exc:
        raise StackError(
            f"the stack in {home} does not answer ({exc.__class__.__name__}): is `clrk up`"
            " still running? Start it again with: clrk up"
        ) from exc


def _say(
    info: StackInfo,
    channel: str,
    text: str,
    thread_ts: str | None,
    user: str,
    timeout_seconds: float,
) -> int:
    body = {"channel": channel, "text": text, "user": user}
    if thread_ts:
        body["thread_ts"] = thread_ts
    with httpx.Client(timeout=10) as http:
        sent = http.post(f"{info.emulator_url}/_emulator/say", json=body)
        if sent.status_code == 400:
            raise ConfigError(str(sent.json().get("detail", sent.text)))
        sent.raise_for_status()
        ts = sent.json()["ts"]
        root = thread_ts or ts
        print(f"sent ts={ts} in thread {root}; waiting for the agent ...")
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            resp = http.get(
                f"{info.slack_api_url}conversations.replies",
                params={"channel": channel, "ts": root, "include_all_metadata": "true"},
                headers={"Authorization": f"Bearer {info.bot_token}"},
            ).json()
            replies = replies_to(resp.get("messages", []), ts)
            if replies:
                for m in replies:
                    print(f"thread-agent: {readable(m.get('text', ''))}")
                print(f"(reply in thread {root}; continue with --thread {root})")
                return 0
            time.sleep(POLL_SECONDS)
    print(
        f"no reply within {timeout_seconds:g} s (the agent may not answer this message:"
        " it answers @mentions, DMs and threads it takes part in; see `clrk invocations`)"
    )
    return 1
