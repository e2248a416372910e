"""``clrk slack say`` against a real emulator: each sender gets its own reply, errors are clear.

The "agent" here is a thread in the test that answers through the emulator's Web API the
way the reference agent does (reply metadata naming the answered ts), in reverse order, so
that a sender picking "the first bot message after mine" would print the wrong reply.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clrk.errors import ConfigError
from clrk.say import replies_to, say
from clrk.stack import BOT_USER_ID, StackError, StackInfo
from support import emulator_serving, wait_for

TOKEN = "xoxb-test-say"
CHANNEL = "C07ZP1MEH5S"


@pytest.fixture
def emulator() -> Iterator[str]:
    with emulator_serving(TOKEN) as url:
        yield url


def _stack(home: Path, emulator_url: str) -> Path:
    home.mkdir(exist_ok=True)
    StackInfo(
        home=str(home),
        emulator_url=emulator_url,
        proxy_url="http://127.0.0.1:9",
        ingress_url="http://127.0.0.1:9",
        runtime_url="sqlite:///unused.db",
        agent="slack-thread-agent",
        bot_token=TOKEN,
    ).save()
    return home


def _answer(emulator_url: str, thread_ts: str, ts: str, text: str) -> None:
    httpx.post(
        f"{emulator_url}/api/chat.postMessage",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "channel": CHANNEL,
            "thread_ts": thread_ts,
            "text": text,
            "metadata": {
                "event_type": "clrk_reply",
                "event_payload": {"outbox_id": f"o-{ts}", "answers": ts},
            },
        },
    ).raise_for_status()


def _user_messages(emulator_url: str) -> list[dict[str, object]]:
    rows = httpx.get(f"{emulator_url}/_emulator/messages", params={"channel": CHANNEL}).json()
    return [m for m in rows["messages"] if m.get("user") != BOT_USER_ID and not m.get("bot_id")]


def test_two_senders_on_one_thread_each_print_their_own_reply(
    emulator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _stack(tmp_path / "home", emulator)
    root = httpx.post(
        f"{emulator}/_emulator/say", json={"channel": CHANNEL, "text": "start"}
    ).json()["ts"]

    def agent() -> None:
        wait_for(lambda: len(_user_messages(emulator)) == 3, "both messages")
        said = {str(m["text"]): str(m["ts"]) for m in _user_messages(emulator)}
        _answer(emulator, root, said["from B"], "answer to B")  # the later one first
        _answer(emulator, root, said["from A"], "answer to A")

    answering = threading.Thread(target=agent)
    answering.start()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(say, home, channel=CHANNEL, thread_ts=root, text="from A")
        wait_for(lambda: len(_user_messages(emulator)) == 2, "A's message first")
        b = pool.submit(say, home, channel=CHANNEL, thread_ts=root, text="from B")
        assert a.result(timeout=30) == 0 and b.result(timeout=30) == 0
    answering.join()
    printed = capsys.readouterr().out
    assert printed.count("thread-agent: answer to A") == 1
    assert printed.count("thread-agent: answer to B") == 1


def test_replies_without_clrk_metadata_count_when_they_come_after() -> None:
    messages = [
        {"ts": "10.000001", "user": "U1", "text": "q"},
        {"ts": "9.000001", "bot_id": "B1", "text": "older"},
        {"ts": "11.000001", "bot_id": "B1", "text": "newer"},
        {
            "ts": "12.000001",
            "bot_id": "B1",
            "text": "someone else's",
            "metadata": {"event_payload": {"answers": "10.5"}},
        },
    ]
    assert [m["text"] for m in replies_to(messages, "10.000001")] == ["newer"]


def test_empty_text_bad_ids_and_a_dead_stack_are_one_clear_error(
    emulator: str, tmp_path: Path
) -> None:
    home = _stack(tmp_path / "home", emulator)
    with pytest.raises(ConfigError, match="empty"):
        say(home, channel=CHANNEL, text="  ")
    with pytest.raises(ConfigError, match="not a Slack conversation id"):
        say(home, channel="NOPE", text="hi")
    with pytest.raises(ConfigError, match="not a Slack ts"):
        say(home, channel=CHANNEL, thread_ts="notats", text="hi")
    dead = tmp_path / "dead"
    dead.mkdir()
    info = json.loads((home / "stack.json").read_text())
    (dead / "stack.json").write_text(json.dumps({**info, "emulator_url": "http://127.0.0.1:9"}))
    with pytest.raises(StackError, match="does not answer"):
        say(dead, channel=CHANNEL, text="hi")
    with pytest.raises(StackError, match="no running stack"):
        say(tmp_path / "nothing", channel=CHANNEL, text="hi")
