"""The demo scenario against the real stack: real HTTP, real processes, real SQLite.

The assertions are made here from the raw material (the emulator's record of the threads,
the store's saved state), not by trusting the demo's own check table.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from clrk.demo import Demo, default_script, is_bot, read_back, spoken
from clrk.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "slack-thread" / "agent.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def played():
    # Not pytest's tmp_path: its parent is private to root, and the sandbox runs the agent
    # as an unprivileged uid that must reach the agent's data directory.
    home = Path(tempfile.mkdtemp(prefix="clrk-e2e-"))
    home.chmod(0o755)
    script = default_script()
    try:
        with LocalStack(home, MANIFEST) as info:
            demo = Demo(info, script, say=lambda line: None)
            asyncio.run(demo.play())
            transcripts = asyncio.run(demo.transcripts())
            stored, turns = read_back(info, script)
        yield script, transcripts, stored, turns, demo
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_every_user_message_is_in_its_own_threads_state_in_order(played) -> None:
    script, _, stored, _, _ = played
    for thread in script:
        texts = stored[thread.key]
        for step_index, step in enumerate(thread.steps):
            for msg in step:
                assert texts.count(spoken(msg.text)) == 1, f"{msg.text!r} not stored once"
            if step_index:
                earlier = [spoken(m.text) for s in thread.steps[:step_index] for m in s]
                assert max(texts.index(t) for t in earlier) < min(
                    texts.index(spoken(m.text)) for m in step
                )
        other_texts = {
            spoken(m.text) for t in script if t is not thread for s in t.steps for m in s
        }
        assert not other_texts & set(texts), "another thread's message is in this state"


def test_exactly_one_reply_per_user_message(played) -> None:
    script, transcripts, _, _, _ = played
    for thread in script:
        replies = [m for m in transcripts[thread.name] if is_bot(m)]
        users = [m for m in transcripts[thread.name] if not is_bot(m)]
        assert len(users) == len(thread.sent)
        assert len(replies) == len(thread.sent)
        ids = [m["metadata"]["event_payload"]["outbox_id"] for m in replies]
        assert len(set(ids)) == len(ids)
        turns = sorted(int(m["text"].split("]")[0].removeprefix("[turn ")) for m in replies)
        assert turns == list(range(1, len(thread.sent) + 1)), "each reply saw one more turn"


def test_the_retry_caused_no_second_turn(played) -> None:
    script, _, _, turns, demo = played
    assert demo.retry_status is not None and 200 <= demo.retry_status < 300
    assert turns == sum(len(t.sent) for t in script)


def test_the_simultaneous_pair_lost_nothing(played) -> None:
    script, _, stored, _, _ = played
    support = script[0]
    pair = [spoken(m.text) for m in support.steps[2]]
    assert len(pair) == 2
    assert all(text in stored[support.key] for text in pair)


def test_no_reply_mentions_another_threads_content(played) -> None:
    script, transcripts, _, _, _ = played
    for thread in script:
        foreign = [t.marker for t in script if t is not thread]
        for m in transcripts[thread.name]:
            if is_bot(m):
                assert not any(word in m["text"].lower() for word in foreign), m["text"]
                assert thread.marker in m["text"].lower(), "reply should recall its own thread"
