"""Chat models for the reference agent.

``DeterministicChatModel`` is a stand-in for an LLM provider (named as such: it is a fake),
used offline, in the demo and in tests. Its answer is a pure function of the whole
conversation it is given, so that memory can be seen and asserted without a network: it
quotes the thread's opening message, counts the user's turns and recalls the previous one.
Had the agent lost a turn, or been handed another thread's history, the reply would show it.

``load_chat_model`` picks the model from ``CLRK_CHAT_MODEL``:

* ``deterministic`` (default): the offline model above;
* ``openai:<model>``: ``langchain_openai.ChatOpenAI`` (``pip install clrk[openai]``); the
  endpoint comes from ``OPENAI_BASE_URL``, so any OpenAI-compatible server works;
* ``<module>:<Class>``: any LangChain chat model class, constructed without arguments.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from clrk.errors import ConfigError

MODEL_ENV = "CLRK_CHAT_MODEL"
QUOTE_CHARS = 60


def _quote(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def _speaker(message: BaseMessage) -> str:
    """Slack user ids become mentions, which Slack renders as the person's name."""
    name = message.name or ""
    return f"<@{name}>" if name[:1] in ("U", "W") and name.isalnum() else (name or "you")


class DeterministicChatModel(BaseChatModel):
    """A fake LLM whose reply depends on every human message of the conversation."""

    @property
    def _llm_type(self) -> str:
        return "clrk-deterministic"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = compose_reply(messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def compose_reply(messages: list[BaseMessage]) -> str:
    """The deterministic answer: turn count, opening topic, previous and latest message."""
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    if not humans:
        return "Hello! Nothing has been said in this thread yet."
    latest = humans[-1]
    turn = len(humans)
    parts = [f"[turn {turn}] {_speaker(latest)}, noted: \u201c{_quote(latest.content)}\u201d."]
    if turn == 1:
        parts.append("This starts our thread; I will remember it.")
    else:
        first = humans[0]
        parts.append(
            f"This thread began with {_speaker(first)}: \u201c{_quote(first.content)}\u201d."
        )
        if turn > 2:
            prev = humans[-2]
            parts.append(f"Just before: {_speaker(prev)}: \u201c{_quote(prev.content)}\u201d.")
        parts.append(f"{turn} messages from people here so far.")
    return " ".join(parts)


def load_chat_model(spec: str | None = None) -> BaseChatModel:
    """Build the chat model named by ``spec`` (default: ``$CLRK_CHAT_MODEL``)."""
    spec = (spec or os.environ.get(MODEL_ENV) or "deterministic").strip()
    if spec == "deterministic":
        return DeterministicChatModel()
    prefix, _, rest = spec.partition(":")
    if not rest:
        raise ConfigError(
            f"{MODEL_ENV}={spec!r}: expected 'deterministic', 'openai:<model>' or 'module:Class'"
        )
    if prefix == "openai":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:
            raise ConfigError("openai models need: pip install 'clrk[openai]'") from exc
        return ChatOpenAI(model=rest)
    try:
        cls = getattr(importlib.import_module(prefix), rest)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{MODEL_ENV}={spec!r}: cannot import {rest} from {prefix}") from exc
    return cls()
