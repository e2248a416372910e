"""``clrk slack say``: one user message into the running stack, then wait for the reply."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from clrk.stack import BOT_USER_ID, StackInfo, readable

POLL_SECONDS = 0.2


def _bot_replies_after(messages: list[dict], after_ts: str) -> list[dict]:
    return [
        m
        for m in messages
        if (m.get("bot_id") or m.get("user") == BOT_USER_ID) and float(m["ts"]) > float(after_ts)
    ]


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
    info = StackInfo.load(home)
    body = {"channel": channel, "text": text, "user": user}
    if thread_ts:
        body["thread_ts"] = thread_ts
    with httpx.Client(timeout=10) as http:
        sent = http.post(f"{info.emulator_url}/_emulator/say", json=body)
        sent.raise_for_status()
        ts = sent.json()["ts"]
        root = thread_ts or ts
        print(f"sent ts={ts} in thread {root}; waiting for the agent ...")
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            resp = http.get(
                f"{info.slack_api_url}conversations.replies",
                params={"channel": channel, "ts": root},
                headers={"Authorization": f"Bearer {info.bot_token}"},
            ).json()
            replies = _bot_replies_after(resp.get("messages", []), ts)
            if replies:
                for m in replies:
                    print(f"thread-agent: {readable(m.get('text', ''))}")
                print(f"(reply in thread {root}; continue with --thread {root})")
                return 0
            time.sleep(POLL_SECONDS)
    print(
        f"no reply within {timeout_seconds:.0f} s (the agent may not answer this message:"
        " it answers @mentions, DMs and threads it takes part in; see `clrk invocations`)"
    )
    return 1
