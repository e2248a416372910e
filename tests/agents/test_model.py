"""The deterministic model: its reply must reveal what the agent remembered."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from clrk.agents.model import DeterministicChatModel, compose_reply, load_chat_model
from clrk.errors import ConfigError


def test_first_turn_starts_the_thread() -> None:
    reply = compose_reply([HumanMessage("deploy fails", name="alice")])
    assert reply.startswith("[turn 1] alice")
    assert "deploy fails" in reply


def test_later_turns_quote_the_opening_and_previous_message() -> None:
    history = [
        HumanMessage("kiwi deploy fails", name="alice"),
        AIMessage("noted"),
        HumanMessage("since the cache change", name="bob"),
        AIMessage("noted"),
        HumanMessage("what now?", name="alice"),
    ]
    reply = compose_reply(history)
    assert reply.startswith("[turn 3] alice")
    assert "alice: \u201ckiwi deploy fails\u201d" in reply
    assert "bob: \u201csince the cache change\u201d" in reply
    assert "3 messages from people" in reply


def test_reply_changes_when_a_turn_is_missing() -> None:
    full = [HumanMessage("a", name="x"), HumanMessage("b", name="x"), HumanMessage("c", name="x")]
    assert compose_reply(full) != compose_reply([full[0], full[2]])


def test_model_is_a_langchain_chat_model() -> None:
    out = DeterministicChatModel().invoke([HumanMessage("hello", name="alice")])
    assert isinstance(out, AIMessage)
    assert "hello" in out.content


def test_long_messages_are_shortened_in_quotes() -> None:
    reply = compose_reply([HumanMessage("x" * 500, name="a"), HumanMessage("y", name="b")])
    assert "x" * 100 not in reply


def test_model_choice_by_name() -> None:
    assert isinstance(load_chat_model("deterministic"), DeterministicChatModel)
    with pytest.raises(ConfigError, match="expected"):
        load_chat_model("gpt4")
    with pytest.raises(ConfigError, match="cannot import"):
        load_chat_model("no_such_module_xyz:Model")
