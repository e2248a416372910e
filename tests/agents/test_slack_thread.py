"""The reference agent, one invocation at a time, against the real emulator and store.

Each test calls ``run()`` as the sandbox would (an envelope in, the environment the
dispatcher sets), with a real SQLite store and the Slack emulator served over HTTP.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clrk import envelope
from clrk.agents import slack_thread
from clrk.errors import ReplyPending, SlackError
from clrk.slack.events import SlackMessage, parse_event
from clrk.state import open_store
from support import emulator_serving

TOKEN = "xoxb-test-agent"
BOT_USER = "U07ZN3CDV8X"


@pytest.fixture
def emulator() -> Iterator[str]:
    with emulator_serving(TOKEN) as url:
        yield url


@pytest.fixture
def env(emulator: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SLACK_API_URL": f"{emulator}/api/",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_BOT_USER_ID": BOT_USER,
        "SLACK_BOT_ID": "B07ZN3CDUQ4",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
    }


def _envelope(body: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_event(body, bot_user_id=BOT_USER, bot_id=None)
    assert isinstance(parsed, SlackMessage)
    event = envelope.new_envelope(body, agent="t", event_id=parsed.dedupe_id, subject=parsed.key)
    return envelope.to_dict(event)


def _fixture(slack_fixtures: Path, name: str) -> dict[str, Any]:
    return json.loads((slack_fixtures / name).read_text())


def _thread(emulator: str, channel: str, ts: str) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{emulator}/api/conversations.replies",
        params={"channel": channel, "ts": ts, "include_all_metadata": "true"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    return [m for m in resp.get("messages", []) if m.get("bot_id")]


def _run(env: dict[str, str], *bodies: dict[str, Any]) -> dict[str, Any]:
    return slack_thread.run([_envelope(b) for b in bodies], env)


def test_a_mention_gets_one_reply_in_its_thread(env, emulator, slack_fixtures) -> None:
    body = _fixture(slack_fixtures, "app_mention_top_level.json")
    result = _run(env, body)
    assert result["status"] == "ok" and result["turn"] == 1
    replies = _thread(emulator, "C07ZP1MEH5S", "1784021532.401829")
    assert [r["text"] for r in replies] == [result["reply"]]
    assert replies[0]["thread_ts"] == "1784021532.401829"
    assert replies[0]["metadata"]["event_payload"]["outbox_id"] == result["posted"][0]
    # It names the message it answers, so `clrk slack say` can find its own reply.
    assert replies[0]["metadata"]["event_payload"]["answers"] == body["event"]["ts"]


def test_a_redelivered_event_does_no_second_turn(env, emulator, slack_fixtures) -> None:
    body = _fixture(slack_fixtures, "app_mention_top_level.json")
    assert _run(env, body)["status"] == "ok"
    again = _run(env, body)
    assert again["status"] == "duplicate"
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 1


def test_the_thread_is_remembered_across_invocations(env, emulator, slack_fixtures) -> None:
    _run(env, _fixture(slack_fixtures, "app_mention_top_level.json"))
    second = _run(env, _fixture(slack_fixtures, "app_mention_in_thread.json"))
    assert second["turn"] == 2
    assert second["reply"].startswith("[turn 2]")
    first_text = slack_thread.spoken_text(
        _fixture(slack_fixtures, "app_mention_top_level.json")["event"]["text"], BOT_USER
    )
    assert first_text[:40] in second["reply"]


def test_an_unmentioned_top_level_message_is_kept_but_not_answered(
    env, emulator, slack_fixtures
) -> None:
    body = _fixture(slack_fixtures, "message_channel_top_level.json")
    result = _run(env, body)
    assert result["status"] == "ok" and result["reply"] is None
    assert _thread(emulator, "C07ZP1MEH5S", body["event"]["ts"]) == []


def test_a_reply_lost_by_a_crash_after_commit_is_sent_once(
    env, emulator, slack_fixtures, monkeypatch
) -> None:
    """The process dies between commit and post: the next run delivers, exactly once."""
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed after commit")

    monkeypatch.setattr(slack_thread.slack_client, "post_reply", crash)
    with pytest.raises(SystemExit):
        _run(env, mention)
    assert _thread(emulator, "C07ZP1MEH5S", "1784021532.401829") == []
    with open_store(env["DATABASE_URL"]) as store:
        row = store.connector.fetch_one("select count(*) as n from clrk_outbox", {})
        assert row is not None and row["n"] == 1, "the reply was committed with the turn"
    monkeypatch.undo()
    # The dead run had claimed its entry; the next run takes it once the claim expired.
    with open_store(env["DATABASE_URL"]) as store:
        assert store.pending_outbox(claim_seconds=1) == [], "still claimed by the dead run"
        # Let the claim run out, as it does CLAIM_SECONDS after the crash.
        store.connector.execute("update clrk_outbox set claimed_until = 0", {})

    later = _run(env, _fixture(slack_fixtures, "app_mention_in_thread.json"))
    replies = _thread(emulator, "C07ZP1MEH5S", "1784021532.401829")
    assert [r["text"].split("]")[0] for r in replies] == ["[turn 1", "[turn 2"]
    assert later["turn"] == 2
    with open_store(env["DATABASE_URL"]) as store:
        row = store.connector.fetch_one(
            "select count(*) as n from clrk_outbox where sent_at is null", {}
        )
        assert row is not None and row["n"] == 0


def test_a_batch_mixing_a_done_event_with_a_new_one_answers_the_new_one(
    env, emulator, slack_fixtures
) -> None:
    """onBusy interrupt re-runs an event that may have committed just before the kill."""
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    follow_up = _fixture(slack_fixtures, "app_mention_in_thread.json")
    assert _run(env, mention)["turn"] == 1
    batch = _run(env, mention, follow_up)
    assert batch["status"] == "ok" and batch["turn"] == 2
    assert batch["reply"] is not None and "turn 2" in batch["reply"]
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 2
    assert _run(env, mention, follow_up)["status"] == "duplicate"


def _killed_while_posting(env: dict[str, str], body: dict[str, Any], monkeypatch) -> None:
    """One run that commits its turn and dies while posting the reply (claim held)."""

    def killed(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed while posting")

    real_post = slack_thread.slack_client.post_reply
    monkeypatch.setattr(slack_thread.slack_client, "post_reply", killed)
    with pytest.raises(SystemExit):
        _run(env, body)
    monkeypatch.setattr(slack_thread.slack_client, "post_reply", real_post)


def _short_claims(monkeypatch, seconds: float = 1.0) -> None:
    monkeypatch.setattr(slack_thread, "CLAIM_SECONDS", seconds)
    monkeypatch.setattr(slack_thread, "CLAIM_POLL_SECONDS", 0.1)


def test_a_retried_event_waits_for_the_reply_a_killed_run_had_claimed(
    env, emulator, slack_fixtures, monkeypatch
) -> None:
    """Killed while posting; the runtime's retry must not call the event done unanswered."""
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    _short_claims(monkeypatch)
    _killed_while_posting(env, mention, monkeypatch)
    # The retry comes before the dead run's claim expired: it waits the claim out, sends.
    retried = _run(env, mention)
    assert retried["status"] == "duplicate" and len(retried["posted"]) == 1
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 1
    assert _run(env, mention)["posted"] == []
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 1


def test_a_reply_still_held_after_a_claim_is_a_retryable_failure(
    env, emulator, slack_fixtures, monkeypatch
) -> None:
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    _short_claims(monkeypatch, 0.3)
    monkeypatch.setattr(
        slack_thread.slack_client, "post_reply", lambda *a, **k: (_ for _ in ()).throw(OSError())
    )
    with pytest.raises(OSError):
        _run(env, mention)
    with open_store(env["DATABASE_URL"]) as store:  # held by a run that never lets go
        store.connector.execute("update clrk_outbox set claimed_until = 1e12", {})
    with pytest.raises(ReplyPending) as info:
        _run(env, mention)
    assert info.value.key.endswith(":1784021532.401829")
    assert _thread(emulator, "C07ZP1MEH5S", "1784021532.401829") == []


def test_main_turns_a_pending_reply_into_a_retryable_exit(monkeypatch, capsys) -> None:
    def pending(envelopes: Any, env: Any = None) -> Any:
        raise ReplyPending("T:C:1", ["o1"])

    monkeypatch.setattr(slack_thread, "run", pending)
    monkeypatch.setattr("sys.stdin", io.StringIO("{}"))
    assert slack_thread.main() == 75
    assert "not yet delivered" in capsys.readouterr().err


def test_a_reply_already_visible_is_not_posted_again(env, emulator, slack_fixtures) -> None:
    """Posted, then died before marking it sent: the redelivery finds it in the thread."""
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    _run(env, mention)
    with open_store(env["DATABASE_URL"]) as store:
        conn = store.connector
        conn.execute("update clrk_outbox set sent_at = null, claimed_until = 0", {})
    later = _run(env, _fixture(slack_fixtures, "app_mention_in_thread.json"))
    assert len(later["posted"]) == 1, "only this turn's reply was posted"
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 2
    with open_store(env["DATABASE_URL"]) as store:
        assert store.pending_outbox() == [], "the found reply was marked sent"


def _elsewhere(body: dict[str, Any], channel: str) -> dict[str, Any]:
    """The same message as if said in another channel (another thread, same store)."""
    moved = json.loads(json.dumps(body).replace("C07ZP1MEH5S", channel))
    moved["event_id"] = moved["event_id"] + "x"
    return moved


def test_a_reply_slack_refuses_for_good_is_given_up_not_retried_forever(
    env, emulator, slack_fixtures
) -> None:
    """Bug: a channel_not_found reply stayed pending, so every later run of the agent, on
    any thread, tried it again, failed, and was retried by the runtime."""
    httpx.post(
        f"{emulator}/_emulator/failures",
        json={"channel": "C07ZP1MEH5S", "error": "channel_not_found", "count": 100},
    )
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    refused = _run(env, mention)
    assert refused["status"] == "ok" and refused["posted"] == []
    [(outbox_id, code)] = refused["undeliverable"].items()
    assert code == "channel_not_found"
    other = _run(env, _elsewhere(mention, "C0OTHERCHAN"))
    assert other["status"] == "ok" and len(other["posted"]) == 1
    assert "undeliverable" not in other, "the given-up reply was not tried again"
    with open_store(env["DATABASE_URL"]) as store:
        assert store.pending_outbox() == []
        row = store.connector.fetch_one(
            "select failure, attempts from clrk_outbox where id = :id", {"id": outbox_id}
        )
    assert row == {"failure": "slack chat.postMessage failed: channel_not_found", "attempts": 1}


def test_a_long_rate_limit_hands_the_reply_back_without_posting_late(
    env, emulator, slack_fixtures
) -> None:
    """Bug: the run slept through a 20 s Retry-After past its 10 s claim; another run took
    the reply meanwhile and both posted it. Now the run gives up at once, hands the reply
    back, and fails so that the runtime retries it; the retry posts it once."""
    import time

    httpx.post(
        f"{emulator}/_emulator/failures",
        json={"channel": "C07ZP1MEH5S", "error": "ratelimited", "retry_after": 120},
    )
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    started = time.monotonic()
    with pytest.raises(SlackError):
        _run(env, mention)
    assert time.monotonic() - started < 10
    with open_store(env["DATABASE_URL"]) as store:
        [entry] = store.pending_outbox(key=_envelope(mention)["subject"])
        assert store.pending_outbox(claim_seconds=1) == [], "not before its Retry-After"
        store.connector.execute("update clrk_outbox set claimed_until = 0", {})  # 120 s on
    other = _run(env, _elsewhere(mention, "C0OTHERCHAN"))  # another thread: not slowed
    assert len(other["posted"]) == 1
    retried = _run(env, mention)  # the runtime's retry, once the limit is over
    assert retried["status"] == "duplicate" and retried["posted"] == [entry.id]
    assert len(_thread(emulator, "C07ZP1MEH5S", "1784021532.401829")) == 1


def test_a_later_message_sends_the_reply_a_dead_run_still_held(
    env, emulator, slack_fixtures, monkeypatch
) -> None:
    """Bug (found by a helper): a run killed while holding its committed reply, then its
    retries spent; the thread's next run skipped the held reply and it was never sent."""
    _short_claims(monkeypatch)
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    _killed_while_posting(env, mention, monkeypatch)  # its retries then spent: dead
    later = _run(env, _fixture(slack_fixtures, "app_mention_in_thread.json"))
    assert later["status"] == "ok" and len(later["posted"]) == 2
    replies = _thread(emulator, "C07ZP1MEH5S", "1784021532.401829")
    assert len(replies) == 2
    # The held reply comes second: this run's own is not kept waiting for a dead claim.
    assert [r["text"].split("]")[0] for r in replies] == ["[turn 2", "[turn 1"]


def test_a_leftover_that_fails_for_now_does_not_fail_another_thread(
    env, emulator, slack_fixtures, monkeypatch
) -> None:
    mention = _fixture(slack_fixtures, "app_mention_top_level.json")
    _run(env, mention)
    with open_store(env["DATABASE_URL"]) as store:  # as if its run died before marking it
        store.connector.execute("update clrk_outbox set sent_at = null, claimed_until = 0", {})
    real_find = slack_thread.slack_client.find_reply

    def slack_down_for_the_first_channel(client: Any, *, channel: str, **kw: Any) -> bool:
        if channel == "C07ZP1MEH5S":
            raise OSError("connection refused")
        return real_find(client, channel=channel, **kw)

    monkeypatch.setattr(slack_thread.slack_client, "find_reply", slack_down_for_the_first_channel)
    other = _run(env, _elsewhere(mention, "C0OTHERCHAN"))
    assert other["status"] == "ok" and len(other["posted"]) == 1
    with open_store(env["DATABASE_URL"]) as store:
        [left] = store.pending_outbox(key=_envelope(mention)["subject"])
    assert left.payload["channel"] == "C07ZP1MEH5S", "still pending, for a later run"
