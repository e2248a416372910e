"""The reference Slack-thread agent: one process per event, the thread lives in the store.

Run by the dispatcher as ``python -m clrk.agents.slack_thread`` in a fresh sandbox. Each run
does the five steps of DESIGN.md:

1. **key in**: the thread key (``CLRK_PARTITION_KEY``, else computed from the event);
2. **state in**: the LangGraph checkpoint of that thread, and the turn's lease in clrk.state;
3. **continue**: the graph answers using the whole thread;
4. **state out**: one commit holds the new turn state, the consumed event ids and the reply
   (in the outbox) -- a retried event finds its id consumed and stops before any work;
5. **reply**: only after that commit, the outbox entry is posted to the thread with
   metadata naming it, then marked sent. An entry left unsent by a crash is redelivered by
   the next run (the runtime's retry of the crashed event is one), unless Slack already
   shows a message carrying its id.

stdin is one CloudEvents envelope (or a list of them, for ``onBusy: coalesce``); stdout is one
JSON object saying what happened.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph

from clrk.agents.model import load_chat_model
from clrk.errors import (
    AlreadyConsumed,
    ClrkError,
    ConfigError,
    PermanentSlackError,
    ReplyPending,
    SlackError,
)
from clrk.slack import client as slack_client
from clrk.slack.events import Ignored, ReplyPolicy, SlackMessage, parse_event, without_mention
from clrk.state import open_store
from clrk.state.langgraph import ClrkSaver

DATABASE_ENV = "DATABASE_URL"
REPLY_KIND = "slack.reply"
# How long a run holds the replies it delivers (it posts nothing after): long enough for
# a reply with 429 waits; a dead run's entries return to others after it.
CLAIM_SECONDS = 20.0
CLAIM_POLL_SECONDS = 0.5
NOT_SAID = (
    "edit",
    "delete",
    "assistant_thread_started",
)  # message kinds nobody awaits an answer to


def database_url(env: Mapping[str, str]) -> str:
    """The store URL: ``$DATABASE_URL``, else SQLite in the worker-local ``$CLRK_DATA_DIR``."""
    url = env.get(DATABASE_ENV)
    if url:
        return url
    data_dir = env.get("CLRK_DATA_DIR")
    if not data_dir:
        raise ConfigError(f"set {DATABASE_ENV} or run with spec.state (CLRK_DATA_DIR)")
    return f"sqlite:///{data_dir}/state.db"


def make_checkpointer(url: str) -> BaseCheckpointSaver:
    """The LangGraph checkpointer: clrk's own saver, in the same database as the turn state.

    It stores the message list as deltas and refuses writes from a superseded lease holder
    (``CLRK_FENCE``). An agent written for LangGraph's Postgres saver switches with this line.
    """
    return ClrkSaver.from_url(url)


def build_graph(model: BaseChatModel) -> StateGraph:
    """One node: the model answers the whole thread. Kept tiny on purpose."""

    def respond(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("respond", respond)
    graph.add_edge(START, "respond")
    return graph


def _message_id(msg: SlackMessage) -> str:
    return f"slack-{msg.channel}-{msg.ts}"


def _read_envelopes(raw: str) -> list[dict[str, Any]]:
    doc = json.loads(raw)
    return doc if isinstance(doc, list) else [doc]


def spoken_text(text: str, bot_user_id: str | None) -> str:
    """The message as said to the bot: its own @mention removed, whitespace tidied."""
    return " ".join(without_mention(text, bot_user_id).split())


def _history_updates(
    messages: Iterable[SlackMessage], bot_user_id: str | None
) -> tuple[list[BaseMessage], bool]:
    """Turn Slack messages into graph updates; the flag says whether any of them is new text."""
    updates: list[BaseMessage] = []
    has_new = False
    for msg in messages:
        if msg.kind == "delete":
            updates.append(RemoveMessage(id=_message_id(msg)))
        elif msg.kind == "assistant_thread_started":
            continue
        else:
            # An edit keeps the message id, so LangGraph's add_messages replaces it in place.
            text = spoken_text(msg.text, bot_user_id)
            updates.append(HumanMessage(content=text, name=msg.user, id=_message_id(msg)))
            has_new = has_new or msg.kind != "edit"
    return updates, has_new


@dataclass
class Delivery:
    """What one pass over the outbox did: ids posted, and ids given up with Slack's reason."""

    posted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def deliver_outbox(store: Any, client: Any, *, key: str, fresh: set[str]) -> Delivery:
    """Post the committed, unsent replies of thread ``key``, then mark them sent.

    Entries are claimed for ``CLAIM_SECONDS`` so two runs never post the same one at once,
    and nothing is posted once the claim may have run out (429 waits included, see
    ``slack_client.within``): a run that gives up hands its entries back for the next.
    An entry not created by this run (``fresh``) is a leftover of a run that died after its
    commit: it is posted only if Slack does not already show a message carrying its id.
    Only this thread's entries: another thread's rate limit must not slow this one, and
    its own leftovers are redelivered by the runtime's retry of its event.

    A reply Slack refuses for good (``channel_not_found``, ``is_archived``, ...) is given
    up with the reason kept (``Store.mark_failed``): left pending, it would fail every later
    run of this thread. One that fails for a passing reason (a 429 past the claim, Slack
    unreachable) is handed back; it fails this run only if this run made it (``fresh``),
    so that the runtime retries the run.
    """
    done = Delivery()
    entries = store.pending_outbox(key=key, claim_seconds=CLAIM_SECONDS)
    # Stop early enough that a request in flight at the deadline ends within the claim.
    margin = min(2 * slack_client.REQUEST_TIMEOUT_SECONDS, CLAIM_SECONDS / 2)
    deadline = time.monotonic() + CLAIM_SECONDS - margin
    failure: BaseException | None = None
    with slack_client.within(client, deadline):
        for entry in entries:
            payload = entry.payload
            if not isinstance(payload, dict) or payload.get("kind") != REPLY_KIND:
                continue
            try:
                if failure is not None:
                    raise failure  # hand the rest back too
                if _post_once(client, entry.id, payload, leftover=entry.id not in fresh):
                    done.posted.append(entry.id)
            except PermanentSlackError as exc:
                store.mark_failed(entry.id, str(exc))
                done.refused[entry.id] = exc.code
                _warn(f"reply {entry.id} to {payload.get('channel')} given up: {exc}")
                continue
            except (SlackError, OSError) as exc:
                # Not before Slack said it would take it: no run hammers a rate limit.
                store.release_claim(entry.id, getattr(exc, "retry_after", None) or 0.0)
                if entry.id in fresh and failure is None:
                    failure = exc
                _warn(f"reply {entry.id} left for a later run: {exc}")
                continue
            store.mark_sent(entry.id)
    if failure is not None:
        raise failure
    return done


def _deliver_when_free(store: Any, client: Any, key: str) -> list[str]:
    """Deliver ``key``'s leftovers, waiting up to one claim for a dead run's to return."""
    posted: list[str] = []
    give_up_at = time.monotonic() + CLAIM_SECONDS + 1
    while True:
        posted += deliver_outbox(store, client, key=key, fresh=set()).posted
        if not store.pending_outbox(key=key) or time.monotonic() >= give_up_at:
            return posted
        time.sleep(CLAIM_POLL_SECONDS)


def _post_once(client: Any, outbox_id: str, payload: dict[str, Any], *, leftover: bool) -> bool:
    """Post one reply unless (for a leftover) Slack already shows it; whether it posted."""
    channel, thread_ts = payload["channel"], payload["thread_ts"]
    if leftover and slack_client.find_reply(
        client, channel=channel, thread_ts=thread_ts, outbox_id=outbox_id
    ):
        return False
    slack_client.post_reply(
        client,
        channel=channel,
        thread_ts=thread_ts,
        text=payload["text"],
        metadata={
            "event_type": "clrk_reply",
            "event_payload": {
                "outbox_id": outbox_id,
                "turn": payload.get("turn", 0),
                # The ts of the messages this reply answers (so a sender can find its own
                # answer); a string, as flat payloads suit Slack best.
                "answers": ",".join(payload.get("answers", [])),
            },
        },
    )
    return True


def _warn(text: str) -> None:
    """One line on stderr, which ``clrk invocations`` shows the tail of."""
    print(f"clrk.agents.slack_thread: {text}", file=sys.stderr)


def run(envelopes: list[dict[str, Any]], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Handle one invocation; returns the JSON-able result printed on stdout."""
    env = dict(os.environ if env is None else env)
    bot_user = env.get("SLACK_BOT_USER_ID")
    bot_id = env.get("SLACK_BOT_ID")
    events = [
        (
            str(e.get("id") or ""),
            parse_event(e.get("data") or {}, bot_user_id=bot_user, bot_id=bot_id),
        )
        for e in envelopes
    ]
    messages = [p for _, p in events if isinstance(p, SlackMessage)]
    if not messages:
        reasons = [p.reason for _, p in events if isinstance(p, Ignored)]
        return {"status": "ignored", "reasons": reasons}

    key = env.get("CLRK_PARTITION_KEY") or messages[0].key
    fence = int(env["CLRK_FENCE"]) if env.get("CLRK_FENCE") else None
    url = database_url(env)
    client = slack_client.make_client(
        base_url=env.get("SLACK_API_URL"), token=env.get("SLACK_BOT_TOKEN")
    )
    thread = _Thread(key, fence, url, env, policy=ReplyPolicy.from_env(env), bot_user=bot_user)

    with open_store(url) as store:
        # Repair a run of this thread that died after its commit, before its reply.
        earlier = deliver_outbox(store, client, key=key, fresh=set()).posted
        while True:
            try:
                meta, reply_text, fresh = thread.turn(store, events)
                break
            except AlreadyConsumed as exc:
                # A batch (onBusy coalesce/interrupt) may mix events an earlier run already
                # committed with new ones: take the turn again with the new ones only.
                events = [(i, p) for i, p in events if i not in exc.event_ids]
                if any(isinstance(p, SlackMessage) for _, p in events):
                    continue
                # The turn was done by an earlier run. If that run died before its reply
                # went out, its claim keeps the reply from us for a while: wait it out and
                # send it; fail (so the runtime retries) only if it is still not out.
                posted = earlier + _deliver_when_free(store, client, key)
                stuck = [e.id for e in store.pending_outbox(key=key)]
                if stuck:
                    raise ReplyPending(key, stuck) from exc
                return {"status": "duplicate", "event_ids": exc.event_ids, "posted": posted}
        delivery = deliver_outbox(store, client, key=key, fresh=fresh)
        if store.pending_outbox(key=key):
            # An earlier run of this thread died holding its reply (one turn per thread
            # runs at a time, so its holder is gone): wait its claim out and send it, or it
            # would wait for the thread's next message. This run's own reply is out already.
            delivery.posted += _deliver_when_free(store, client, key)
    result = {
        "status": "ok",
        "key": key,
        "turn": meta["turns"],
        "reply": reply_text,
        "posted": earlier + delivery.posted,
    }
    if delivery.refused:
        result["undeliverable"] = delivery.refused
    return result


class _Thread:
    """One thread's turn: the graph continued on its messages, committed with the reply."""

    def __init__(
        self,
        key: str,
        fence: int | None,
        url: str,
        env: Mapping[str, str],
        *,
        policy: ReplyPolicy,
        bot_user: str | None,
    ) -> None:
        self.key, self.fence, self.url, self.env = key, fence, url, env
        self.policy, self.bot_user = policy, bot_user

    def turn(
        self, store: Any, events: list[tuple[str, Any]]
    ) -> tuple[dict[str, Any], str | None, set[str]]:
        """Commit one turn consuming ``events``: (thread metadata, reply text, outbox ids)."""
        messages = [p for _, p in events if isinstance(p, SlackMessage)]
        root = messages[0]
        event_ids = [i for i, _ in events if i]
        with store.turn(self.key, consumes=event_ids, fence=self.fence) as turn:
            meta = dict(turn.state or {})
            updates, has_new = _history_updates(messages, self.bot_user)
            reply_text = None
            with make_checkpointer(self.url) as saver:
                graph = build_graph(load_chat_model(self.env.get("CLRK_CHAT_MODEL"))).compile(
                    checkpointer=saver
                )
                config = {"configurable": {"thread_id": self.key}}
                wants_reply = has_new and any(
                    self.policy.should_reply(m, bot_in_thread=bool(meta.get("bot_in_thread")))
                    for m in messages
                )
                if wants_reply:
                    out = graph.invoke({"messages": updates}, config, durability="exit")
                    reply_text = str(out["messages"][-1].content)
                elif updates:
                    # Remember what was said without answering: the next answer sees it.
                    graph.update_state(config, {"messages": updates}, as_node="respond")
            meta["turns"] = int(meta.get("turns", 0)) + 1
            fresh: set[str] = set()
            if reply_text is not None:
                meta["bot_in_thread"] = True
                fresh.add(
                    turn.add_outbox(
                        {
                            "kind": REPLY_KIND,
                            "channel": root.channel,
                            "thread_ts": root.thread_ts,
                            "text": reply_text,
                            "turn": meta["turns"],
                            "answers": [m.ts for m in messages if m.kind not in NOT_SAID],
                        }
                    )
                )
            turn.state = meta
        return meta, reply_text, fresh


def main() -> int:
    try:
        result = run(_read_envelopes(sys.stdin.read()))
    except ClrkError as exc:  # one line for `clrk invocations`; non-zero means retry
        print(f"clrk.agents.slack_thread: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
