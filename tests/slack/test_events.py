"""The event adapter against every shared Slack fixture, and the reply policy."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jmespath
import pytest

from clrk.slack.events import (
    PARTITION_KEY_EXPRESSION,
    Ignored,
    ReplyPolicy,
    SlackMessage,
    parse_event,
    without_mention,
)
from support import SLACK_FIXTURES

BOT_USER = "U07ZN3CDV8X"
BOT_ID = "B07ZN3CDUQ4"


def _expected(slack_fixtures: Path) -> dict[str, Any]:
    return json.loads((slack_fixtures / "expected.json").read_text())["files"]


def _load(slack_fixtures: Path, name: str) -> dict[str, Any]:
    return json.loads((slack_fixtures / name).read_bytes())


def _fixture_names() -> list[str]:
    path = SLACK_FIXTURES / "expected.json"
    if not path.is_file():
        return []
    return sorted(json.loads(path.read_text())["files"])


# Which fixtures start a (possibly silent) turn, and which the adapter drops.
IGNORED = {
    "url_verification.json",
    "message_bot_self_reply.json",
    "message_bot_message_other_app.json",
}
KINDS = {
    "message_channel_top_level.json": "message",
    "app_mention_top_level.json": "mention",
    "message_thread_reply.json": "message",
    "app_mention_in_thread.json": "mention",
    "message_changed_user_edit.json": "edit",
    "message_deleted.json": "delete",
    "message_thread_broadcast.json": "message",
    "message_file_share.json": "message",
    "message_im.json": "im",
    "assistant_thread_started.json": "assistant_thread_started",
    "wire_app_mention_top_level.min.json": "mention",
}
# Reference policy in expected.json; "bot in thread" is true for the main thread only.
REPLIES = {
    "message_channel_top_level.json": False,
    "app_mention_top_level.json": True,
    "message_thread_reply.json": True,
    "app_mention_in_thread.json": True,
    "message_changed_user_edit.json": False,
    "message_deleted.json": False,
    "message_thread_broadcast.json": True,
    "message_file_share.json": True,
    "message_im.json": True,
    "assistant_thread_started.json": True,
    "wire_app_mention_top_level.min.json": True,
}
MAIN_THREAD = "T07ZK4QW9PL:C07ZP1MEH5S:1784021532.401829"


def test_fixture_list_is_covered(slack_fixtures: Path) -> None:
    names = set(_expected(slack_fixtures))
    assert names == IGNORED | set(KINDS)
    on_disk = {p.name for p in slack_fixtures.glob("*.json")} - {"expected.json", "signatures.json"}
    assert on_disk == names


@pytest.mark.parametrize("name", _fixture_names())
def test_fixture_key_and_message_ts(slack_fixtures: Path, name: str) -> None:
    expected = _expected(slack_fixtures)[name]
    result = parse_event(_load(slack_fixtures, name), bot_user_id=BOT_USER, bot_id=BOT_ID)
    want_key = ":".join(expected["conversation_key"]) if expected["conversation_key"] else None
    if name in IGNORED:
        assert isinstance(result, Ignored)
        assert result.reason
        assert result.key == want_key
        return
    assert isinstance(result, SlackMessage)
    assert result.key == want_key
    assert result.ts == expected["message_ts"]
    assert result.kind == KINDS[name]
    assert result.event_id == expected["event_id"]
    assert isinstance(result.thread_ts, str)
    if result.ts is not None:
        assert result.dedupe_id.startswith(f"slack:{result.team}:{result.channel}:{result.ts}")


@pytest.mark.parametrize("name", _fixture_names())
def test_fixture_reply_policy(slack_fixtures: Path, name: str) -> None:
    result = parse_event(_load(slack_fixtures, name), bot_user_id=BOT_USER, bot_id=BOT_ID)
    if name in IGNORED:
        assert isinstance(result, Ignored)
        return
    assert isinstance(result, SlackMessage)
    in_thread = result.key == MAIN_THREAD
    assert ReplyPolicy().should_reply(result, bot_in_thread=in_thread) is REPLIES[name]


@pytest.mark.parametrize("name", _fixture_names())
def test_partition_key_expression_agrees(slack_fixtures: Path, name: str) -> None:
    body = _load(slack_fixtures, name)
    result = parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID)
    if result.key is None:  # url_verification: nothing to key
        return
    envelope = {"specversion": "1.0", "id": "x", "type": "t", "source": "s", "data": body}
    assert jmespath.search(PARTITION_KEY_EXPRESSION, envelope) == result.key


def test_mention_as_message_and_app_mention_share_dedupe_id(slack_fixtures: Path) -> None:
    mention = _load(slack_fixtures, "app_mention_top_level.json")
    as_message = copy.deepcopy(mention)
    as_message["event"]["type"] = "message"
    as_message["event"]["channel_type"] = "channel"
    as_message["event_id"] = "Ev07ZQ9B4OTHER"
    a = parse_event(mention, bot_user_id=BOT_USER, bot_id=BOT_ID)
    b = parse_event(as_message, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(a, SlackMessage) and isinstance(b, SlackMessage)
    assert a.event_id != b.event_id
    assert a.dedupe_id == b.dedupe_id == "slack:T07ZK4QW9PL:C07ZP1MEH5S:1784021532.401829"
    assert a.mentioned and b.mentioned
    assert (a.kind, b.kind) == ("mention", "message")


def test_edit_and_delete_do_not_collide_with_the_original(slack_fixtures: Path) -> None:
    ids = {
        parse_event(_load(slack_fixtures, n), bot_user_id=BOT_USER, bot_id=BOT_ID).dedupe_id
        for n in (
            "message_thread_reply.json",
            "message_changed_user_edit.json",
            "message_deleted.json",
        )
    }
    assert len(ids) == 3


def test_edit_that_changes_no_text_is_ignored(slack_fixtures: Path) -> None:
    body = _load(slack_fixtures, "message_changed_user_edit.json")
    body["event"]["message"]["text"] = body["event"]["previous_message"]["text"]
    result = parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, Ignored) and "no text" in result.reason
    assert result.key == MAIN_THREAD


def test_edit_of_a_top_level_message_keys_on_the_message_not_the_edit(
    slack_fixtures: Path,
) -> None:
    body = _load(slack_fixtures, "message_changed_user_edit.json")
    for nested in (body["event"]["message"], body["event"]["previous_message"]):
        del nested["thread_ts"]
    result = parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, SlackMessage)
    assert result.key == "T07ZK4QW9PL:C07ZP1MEH5S:1784021601.771349"
    envelope = {"data": body}
    assert jmespath.search(PARTITION_KEY_EXPRESSION, envelope) == result.key


def test_system_subtypes_and_bots_are_ignored(slack_fixtures: Path) -> None:
    body = _load(slack_fixtures, "message_channel_top_level.json")
    body["event"]["subtype"] = "channel_join"
    assert isinstance(parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID), Ignored)
    self_reply = _load(slack_fixtures, "message_bot_self_reply.json")
    result = parse_event(self_reply, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, Ignored) and result.reason == "our own bot"
    other = _load(slack_fixtures, "message_bot_message_other_app.json")
    result = parse_event(other, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, Ignored) and result.reason == "another bot"


def test_own_bot_recognised_without_configuration(slack_fixtures: Path) -> None:
    """The body's authorizations name our bot user; nothing needs configuring."""
    result = parse_event(
        _load(slack_fixtures, "message_bot_self_reply.json"), bot_user_id=None, bot_id=None
    )
    assert isinstance(result, Ignored) and result.reason == "our own bot"
    mention = parse_event(
        _load(slack_fixtures, "message_thread_reply.json"), bot_user_id=None, bot_id=None
    )
    assert isinstance(mention, SlackMessage) and not mention.mentioned


def test_keys_stay_strings_even_when_ts_looks_like_a_float(slack_fixtures: Path) -> None:
    body = _load(slack_fixtures, "message_thread_reply.json")
    body["event"]["thread_ts"] = "1784021532.401800"  # trailing zeros a float would drop
    result = parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, SlackMessage)
    assert result.key.endswith(":1784021532.401800")
    body["event"]["ts"] = 1784021601.771349  # a number is not a Slack ts
    assert isinstance(parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID), Ignored)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"type": "block_actions"},
        {"type": "event_callback"},
        {"type": "event_callback", "event": {"type": "reaction_added"}},
    ],
)
def test_unsupported_bodies_are_ignored_with_a_reason(body: Any) -> None:
    result = parse_event(body, bot_user_id=BOT_USER, bot_id=BOT_ID)
    assert isinstance(result, Ignored) and result.reason


def _msg(**overrides: Any) -> SlackMessage:
    fields: dict[str, Any] = dict(
        team="T1",
        channel="C1",
        thread_ts="1.1",
        ts="1.1",
        user="U1",
        text="hi",
        kind="message",
        mentioned=False,
    )
    fields.update(overrides)
    return SlackMessage(**fields)


def test_reply_policy_switches() -> None:
    mention = _msg(kind="mention", mentioned=True)
    dm = _msg(channel="D1", kind="im")
    dm_thread = _msg(channel="D1", kind="im", ts="1.2")
    reply = _msg(ts="1.2")
    started = _msg(channel="D1", ts=None, kind="assistant_thread_started")
    off = ReplyPolicy(
        mentions=False, dms=False, assistant_threads=False, participating_threads=False
    )
    for message in (mention, dm, dm_thread, reply, started):
        assert not off.should_reply(message, bot_in_thread=True)
    assert ReplyPolicy(mentions=True, dms=False).should_reply(mention)
    assert not ReplyPolicy(dms=False, assistant_threads=False).should_reply(dm)
    assert ReplyPolicy(dms=False).should_reply(dm_thread, bot_in_thread=True)
    assert not ReplyPolicy(dms=False).should_reply(dm_thread, bot_in_thread=False)
    assert ReplyPolicy().should_reply(reply, bot_in_thread=True)
    assert not ReplyPolicy().should_reply(reply, bot_in_thread=False)
    assert not ReplyPolicy().should_reply(_msg(), bot_in_thread=True)  # top level, no mention
    assert ReplyPolicy(assistant_threads=True).should_reply(started)


def test_reply_policy_from_dict_names_unknown_options() -> None:
    assert ReplyPolicy.from_dict({"dms": False}) == ReplyPolicy(dms=False)
    with pytest.raises(ValueError, match="threads"):
        ReplyPolicy.from_dict({"threads": True})


def test_reply_policy_parse_and_env() -> None:
    assert ReplyPolicy.parse("") == ReplyPolicy() == ReplyPolicy.parse("all")
    assert ReplyPolicy.parse("mentions, dms") == ReplyPolicy(
        mentions=True, dms=True, assistant_threads=False, participating_threads=False
    )
    assert not any(vars(ReplyPolicy.parse("none")).values())
    assert ReplyPolicy.from_env({"CLRK_REPLY_POLICY": "dms"}) == ReplyPolicy.parse("dms")
    with pytest.raises(ValueError, match="choose from"):
        ReplyPolicy.parse("mentions,everything")


def test_public_surface_is_listed() -> None:
    import types

    import clrk.slack

    public = {
        name
        for name, value in vars(clrk.slack).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(clrk.slack.__all__) == public  # the order is ruff's (RUF022)


@pytest.mark.parametrize(
    "text",
    ["<@UBOT> hi <@UBOT|thread-agent>!", "<@UBOT|thread agent> hi <@UBOT>!"],
)
def test_the_bots_mention_is_removed_labelled_or_not(text: str) -> None:
    assert " ".join(without_mention(text, "UBOT").split()) == "hi !"
    assert without_mention("<@UOTHER|x> hi", "UBOT") == "<@UOTHER|x> hi"
    assert without_mention("<@UBOT> hi", None) == "<@UBOT> hi"
