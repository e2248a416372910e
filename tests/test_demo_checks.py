"""The demo's check table must catch what it claims to catch."""

from __future__ import annotations

from clrk.demo import BOT_USER_ID, Say, ScriptedThread, check_run


def _thread(name: str, channel: str, marker: str, texts: list[str]) -> ScriptedThread:
    t = ScriptedThread(
        name=name, channel=channel, marker=marker, steps=[[Say("U1", x)] for x in texts]
    )
    t.root_ts = "100.000001"
    t.sent = [(f"{100 + i}.000001", Say("U1", x)) for i, x in enumerate(texts)]
    return t


def _reply(text: str, outbox_id: str) -> dict:
    return {
        "user": BOT_USER_ID,
        "bot_id": "B1",
        "text": text,
        "metadata": {"event_payload": {"outbox_id": outbox_id}},
    }


def _good():
    a = _thread("a", "C1", "kiwi", ["kiwi one", "kiwi two"])
    b = _thread("b", "C2", "mango", ["mango one"])
    transcripts = {
        "a": [
            {"user": "U1", "text": "kiwi one"},
            _reply("[turn 1] kiwi one", "o1"),
            {"user": "U1", "text": "kiwi two"},
            _reply("[turn 2] began: kiwi one", "o2"),
        ],
        "b": [{"user": "U1", "text": "mango one"}, _reply("[turn 1] mango one", "o3")],
    }
    stored = {a.key: ["kiwi one", "kiwi two"], b.key: ["mango one"]}
    return [a, b], transcripts, stored


def _failed(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_a_clean_run_passes() -> None:
    script, transcripts, stored = _good()
    assert _failed(check_run(script, transcripts, stored, 3, 200)) == set()


def test_leak_duplicate_loss_and_forgetting_are_caught() -> None:
    script, transcripts, stored = _good()
    transcripts["b"].append(_reply("[turn 2] kiwi?", "o3"))
    stored[script[0].key] = ["kiwi two"]
    failed = _failed(check_run(script, transcripts, stored, 4, None))
    assert {
        "cross-thread leaks",
        "duplicate replies",
        "lost messages",
        "turns run",
        "replies posted",
        "Slack retry answered 2xx by the proxy",
        "replies that forgot their thread",
    } <= failed
