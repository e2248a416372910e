"""The event adapter: one Slack Events API body in, one conversation message (or a reason) out.

Slack describes the same user message in several shapes: as ``message`` and as
``app_mention`` (two event ids), nested under ``message`` / ``previous_message`` for edits
and deletes, under ``assistant_thread`` for the AI-app container. Everything downstream
(ingress dedupe, partition key, the agent's reply policy) needs one flat view of it, keyed
by strings: a ``ts`` read as a float loses digits and splits a thread in two.

The key computed here and :data:`PARTITION_KEY_EXPRESSION` (the same key as JMESPath over
the CloudEvents envelope, for the TaskAgent manifest) must agree; a test checks both on
every fixture.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["message", "mention", "im", "edit", "delete", "assistant_thread_started"]

#: JMESPath over the CloudEvents envelope (the Slack body under ``data``) that yields
#: :attr:`SlackMessage.key`. The thread root comes first from the event itself, then
#: from the nested message of an edit or delete, then from an assistant thread; only a
#: top-level message falls back to its own ``ts`` (for an edit, the edited message's
#: ``ts``, never the edit's own ``event.ts``).
PARTITION_KEY_EXPRESSION = (
    "join(':', ["
    "data.team_id || data.event.team, "
    "data.event.channel || data.event.assistant_thread.channel_id, "
    "data.event.thread_ts || data.event.message.thread_ts"
    " || data.event.previous_message.thread_ts || data.event.assistant_thread.thread_ts"
    " || data.event.message.ts || data.event.deleted_ts || data.event.ts"
    "])"
)

REPLY_POLICY_ENV = "CLRK_REPLY_POLICY"

# Subtypes that are a person speaking; every other subtype is a system notice
# (channel_join, channel_topic, message_replied, ...) and never starts a turn.
_SPOKEN_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "me_message"})
_DM_CHANNEL_TYPES = frozenset({"im"})


@dataclass(frozen=True)
class SlackMessage:
    """One user-visible message (or edit, delete, assistant-thread start) in a conversation.

    ``thread_ts`` is the conversation's root ``ts``: reply with it. ``ts`` is the underlying
    message (``None`` only for ``assistant_thread_started``, which has none).
    """

    team: str
    channel: str
    thread_ts: str
    ts: str | None
    user: str
    text: str
    kind: Kind
    mentioned: bool
    event_id: str | None = None
    event_type: str = "message"
    subtype: str | None = None
    channel_type: str | None = None
    api_app_id: str | None = None
    previous_text: str | None = None
    files: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    event_ts: str | None = None

    @property
    def key(self) -> str:
        """The conversation (partition) key: ``team:channel:root_ts``."""
        return f"{self.team}:{self.channel}:{self.thread_ts}"

    @property
    def is_thread_reply(self) -> bool:
        return self.ts is not None and self.ts != self.thread_ts

    @property
    def dedupe_id(self) -> str:
        """The id the ingress dedupes on.

        A user message is one id whichever event type carried it (``app_mention`` and
        ``message`` share channel + ts). Edits and deletes add the edit's own event ``ts``,
        so they never collide with the message they change, yet stay stable across
        Slack's retries.
        """
        base = f"slack:{self.team}:{self.channel}"
        if self.kind in ("edit", "delete"):
            return f"{base}:{self.ts}:{self.kind}:{self.event_ts or self.event_id}"
        if self.kind == "assistant_thread_started":
            return f"{base}:{self.thread_ts}:assistant_thread_started"
        return f"{base}:{self.ts}"


@dataclass(frozen=True)
class ReplyPolicy:
    """When an agent answers; configurable per agent. The default answers in all four cases.

    * ``mentions``: the bot is @-mentioned (in a channel or a thread).
    * ``dms``: a direct message to the bot.
    * ``assistant_threads``: the AI-app assistant container (its start, and replies in
      threads of the bot's DM, which is where that container lives).
    * ``participating_threads``: a reply in a thread the bot has already posted in.

    Edits, deletes and top-level channel chatter without a mention never get a reply.
    """

    mentions: bool = True
    dms: bool = True
    assistant_threads: bool = True
    participating_threads: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReplyPolicy:
        """Build from manifest-style config; unknown names raise ``ValueError`` naming them."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown reply policy option(s): {', '.join(unknown)}")
        return cls(**{name: bool(value) for name, value in data.items()})

    @classmethod
    def parse(cls, text: str | None) -> ReplyPolicy:
        """From a comma list such as ``"mentions,dms"`` (an agent's ``CLRK_REPLY_POLICY``
        env value); ``"all"`` or empty is the default, ``"none"`` answers nothing."""
        names = {part.strip() for part in (text or "").split(",") if part.strip()}
        if not names or names == {"all"}:
            return cls()
        names.discard("none")
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(names - fields)
        if unknown:
            raise ValueError(
                f"unknown reply policy option(s): {', '.join(unknown)}; "
                f"choose from {', '.join(sorted(fields))}, all, none"
            )
        return cls(**{name: name in names for name in fields})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReplyPolicy:
        return cls.parse((os.environ if env is None else env).get(REPLY_POLICY_ENV))

    def should_reply(self, message: SlackMessage, *, bot_in_thread: bool = False) -> bool:
        """Decide for one message; ``bot_in_thread``: the bot already posted in its thread."""
        if message.kind in ("edit", "delete"):
            return False
        if message.kind == "assistant_thread_started":
            return self.assistant_threads
        if message.mentioned and self.mentions:
            return True
        if message.kind == "im":
            if self.dms:
                return True
            return self.assistant_threads and message.is_thread_reply and bot_in_thread
        return self.participating_threads and message.is_thread_reply and bot_in_thread


@dataclass(frozen=True)
class Ignored:
    """A body that must not start a turn, with why; ``key`` when one could be computed."""

    reason: str
    key: str | None = None
    event_id: str | None = None


def parse_event(
    body: dict[str, Any], *, bot_user_id: str | None = None, bot_id: str | None = None
) -> SlackMessage | Ignored:
    """Read a Slack Events API body (already verified and JSON-decoded).

    ``bot_user_id`` / ``bot_id`` identify our own bot. When not given, the bot user is
    taken from the body's ``authorizations`` and our own app from ``api_app_id``, so the
    bot's echoed replies are ignored even without configuration.
    """
    if not isinstance(body, dict):
        return Ignored("body is not a JSON object")
    body_type = body.get("type")
    if body_type == "url_verification":
        return Ignored("url_verification")
    if body_type != "event_callback":
        return Ignored(f"unsupported body type {body_type!r}")
    event = body.get("event")
    if not isinstance(event, dict):
        return Ignored("event_callback without an event", event_id=body.get("event_id"))

    event_id = _str(body.get("event_id"))
    team = _str(body.get("team_id")) or _str(event.get("team"))
    bot_user_id = bot_user_id or _authorized_bot_user(body)
    etype = event.get("type")

    if etype == "assistant_thread_started":
        return _assistant_thread(body, event, team, event_id)
    if etype not in ("message", "app_mention"):
        return Ignored(f"unsupported event type {etype!r}", event_id=event_id)

    channel = _str(event.get("channel"))
    subtype = event.get("subtype")
    if subtype == "message_changed":
        return _edit(body, event, team, channel, event_id, bot_user_id, bot_id)
    if subtype == "message_deleted":
        return _delete(body, event, team, channel, event_id, bot_user_id, bot_id)

    ts = _str(event.get("ts"))
    thread_ts = _str(event.get("thread_ts")) or ts
    if not (team and channel and ts):
        return Ignored("message without team, channel or ts", event_id=event_id)
    key = f"{team}:{channel}:{thread_ts}"
    if _is_bot(event, body, bot_user_id, bot_id):
        return Ignored(_bot_reason(event, body, bot_user_id, bot_id), key, event_id)
    if subtype not in _SPOKEN_SUBTYPES or event.get("hidden"):
        return Ignored(f"system message subtype {subtype!r}", key, event_id)
    user = _str(event.get("user"))
    if not user:
        return Ignored("message without a user", key, event_id)

    text = event.get("text") or ""
    channel_type = event.get("channel_type")
    if etype == "app_mention":
        kind: Kind = "mention"
    elif channel_type in _DM_CHANNEL_TYPES or channel.startswith("D"):
        kind = "im"
    else:
        kind = "message"
    return SlackMessage(
        team=team,
        channel=channel,
        thread_ts=thread_ts,
        ts=ts,
        user=user,
        text=text,
        kind=kind,
        mentioned=etype == "app_mention" or _mentions(text, bot_user_id),
        event_id=event_id,
        event_type=etype,
        subtype=subtype,
        channel_type=channel_type,
        api_app_id=_str(body.get("api_app_id")) or None,
        files=tuple(event.get("files") or ()),
        event_ts=_str(event.get("event_ts")) or ts,
    )


def _edit(
    body: dict[str, Any],
    event: dict[str, Any],
    team: str,
    channel: str,
    event_id: str,
    bot_user_id: str | None,
    bot_id: str | None,
) -> SlackMessage | Ignored:
    message = _obj(event.get("message"))
    previous = _obj(event.get("previous_message"))
    ts = _str(message.get("ts")) or _str(previous.get("ts"))
    thread_ts = _str(message.get("thread_ts")) or _str(previous.get("thread_ts")) or ts
    if not (team and channel and ts):
        return Ignored("edit without team, channel or message ts", event_id=event_id)
    key = f"{team}:{channel}:{thread_ts}"
    if _is_bot(message, body, bot_user_id, bot_id):
        return Ignored("edit of a bot message", key, event_id)
    if message.get("subtype") not in _SPOKEN_SUBTYPES:
        return Ignored(f"edit of a system message {message.get('subtype')!r}", key, event_id)
    text = message.get("text") or ""
    previous_text = previous.get("text") or ""
    # Slack also sends message_changed when a link unfurls or a reply count moves:
    # the text is unchanged and nobody edited anything.
    if text == previous_text:
        return Ignored("edit that changes no text", key, event_id)
    user = _str(message.get("user"))
    if not user:
        return Ignored("edit without a user", key, event_id)
    return SlackMessage(
        team=team,
        channel=channel,
        thread_ts=thread_ts,
        ts=ts,
        user=user,
        text=text,
        kind="edit",
        mentioned=_mentions(text, bot_user_id),
        event_id=event_id,
        event_type="message",
        subtype="message_changed",
        channel_type=event.get("channel_type"),
        api_app_id=_str(body.get("api_app_id")) or None,
        previous_text=previous_text,
        event_ts=_str(event.get("event_ts")) or _str(event.get("ts")),
    )


def _delete(
    body: dict[str, Any],
    event: dict[str, Any],
    team: str,
    channel: str,
    event_id: str,
    bot_user_id: str | None,
    bot_id: str | None,
) -> SlackMessage | Ignored:
    previous = _obj(event.get("previous_message"))
    ts = _str(event.get("deleted_ts")) or _str(previous.get("ts"))
    thread_ts = _str(previous.get("thread_ts")) or ts
    if not (team and channel and ts):
        return Ignored("delete without team, channel or deleted_ts", event_id=event_id)
    key = f"{team}:{channel}:{thread_ts}"
    if previous and _is_bot(previous, body, bot_user_id, bot_id):
        return Ignored("delete of a bot message", key, event_id)
    return SlackMessage(
        team=team,
        channel=channel,
        thread_ts=thread_ts,
        ts=ts,
        user=_str(previous.get("user")),
        text="",
        kind="delete",
        mentioned=False,
        event_id=event_id,
        event_type="message",
        subtype="message_deleted",
        channel_type=event.get("channel_type"),
        api_app_id=_str(body.get("api_app_id")) or None,
        previous_text=previous.get("text"),
        event_ts=_str(event.get("event_ts")) or _str(event.get("ts")),
    )


def _assistant_thread(
    body: dict[str, Any], event: dict[str, Any], team: str, event_id: str
) -> SlackMessage | Ignored:
    thread = _obj(event.get("assistant_thread"))
    channel = _str(thread.get("channel_id"))
    thread_ts = _str(thread.get("thread_ts"))
    if not (team and channel and thread_ts):
        return Ignored("assistant_thread_started without channel or thread", event_id=event_id)
    return SlackMessage(
        team=team,
        channel=channel,
        thread_ts=thread_ts,
        ts=None,
        user=_str(thread.get("user_id")),
        text="",
        kind="assistant_thread_started",
        mentioned=False,
        event_id=event_id,
        event_type="assistant_thread_started",
        channel_type="im",
        api_app_id=_str(body.get("api_app_id")) or None,
        event_ts=_str(event.get("event_ts")),
    )


def _obj(value: Any) -> dict[str, Any]:
    """A nested object of the event, or ``{}`` when it is missing or not an object."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    """A Slack id or ts as a string; numbers are refused rather than reformatted."""
    return value if isinstance(value, str) else ""


def _authorized_bot_user(body: dict[str, Any]) -> str | None:
    auths = body.get("authorizations")
    for auth in auths if isinstance(auths, list) else ():
        if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str):
            return auth["user_id"]
    return None


def _is_bot(
    message: dict[str, Any], body: dict[str, Any], bot_user_id: str | None, bot_id: str | None
) -> bool:
    return bool(
        message.get("bot_id")
        or message.get("subtype") == "bot_message"
        or (bot_user_id and message.get("user") == bot_user_id)
        or (bot_id and message.get("bot_profile", {}).get("id") == bot_id)
        or (message.get("app_id") and message.get("app_id") == body.get("api_app_id"))
    )


def _bot_reason(
    event: dict[str, Any], body: dict[str, Any], bot_user_id: str | None, bot_id: str | None
) -> str:
    own = (
        (bot_id and event.get("bot_id") == bot_id)
        or (bot_user_id and event.get("user") == bot_user_id)
        or (event.get("app_id") and event.get("app_id") == body.get("api_app_id"))
    )
    return "our own bot" if own else "another bot"


def _mention_pattern(user_id: str) -> re.Pattern[str]:
    # Slack writes a mention as <@U123> or <@U123|display-name>.
    return re.compile(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>")


def _mentions(text: str, bot_user_id: str | None) -> bool:
    return bool(bot_user_id) and _mention_pattern(bot_user_id or "").search(text) is not None


def without_mention(text: str, user_id: str | None) -> str:
    """``text`` with every @mention of ``user_id`` (labelled or not) replaced by a space."""
    return _mention_pattern(user_id).sub(" ", text) if user_id else text
