"""``clrk demo``: the main job, end to end, on the embedded defaults.

A scripted conversation is played through the local stack exactly as Slack would deliver
it: people write in the Slack emulator, which sends signed ``event_callback`` requests to the
auth proxy; the ingress stores them; the dispatcher runs the reference agent in a fresh
process per event; the agent replies in the thread through the emulator's Web API.

The script covers the hard parts: two threads in two channels with several turns each, a
top-level @mention that starts a thread, a thread reply without a mention (answered because
the bot already takes part), a Slack retry of a delivered event, and two messages sent to
one thread at the same moment. Afterwards the demo reads the transcript back from the
emulator and the thread state back from the store, and checks what must be true.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clrk.config import RUNTIME_DB
from clrk.errors import ConfigError
from clrk.runtime.sandbox import choose_sandbox
from clrk.stack import (
    ALICE,
    BOB,
    BOT_USER_ID,
    NAMES,
    TEAM_ID,
    LocalStack,
    StackInfo,
    alive,
    readable,
    refuse_a_running_stack,
)

MENTION = f"<@{BOT_USER_ID}>"
REPLY_TIMEOUT_SECONDS = 45.0
RETRY_SETTLE_SECONDS = 2.0
# Marks a folder as the demo's own (and holds the pid of the run using it).
DEMO_MARK = ".clrk-demo"
# What a demo run leaves in its folder: such a folder may be emptied without a mark.
DEMO_FILES = frozenset(
    {DEMO_MARK, "agents", "applied-agent.yaml", "logs", "stack.json"}
    | {f"{RUNTIME_DB}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")}
)


@dataclass(frozen=True)
class Say:
    user: str
    text: str


@dataclass
class ScriptedThread:
    """One conversation: steps of messages; the messages of one step are sent at once."""

    name: str
    channel: str
    marker: str  # a word only this thread uses: finding it elsewhere is a leak
    steps: list[list[Say]]
    retry_first_event: bool = False
    root_ts: str = ""
    sent: list[tuple[str, Say]] = field(default_factory=list)  # (ts, message)
    first_event_ids: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{TEAM_ID}:{self.channel}:{self.root_ts}"


def default_script() -> list[ScriptedThread]:
    return [
        ScriptedThread(
            name="#proj-support",
            channel="C07ZP1MEH5S",
            marker="kiwi",
            steps=[
                [Say(ALICE, f"{MENTION} the kiwi-service deploy fails with exit code 137")],
                [Say(BOB, "it started right after we doubled the kiwi cache size")],
                [
                    Say(ALICE, f"{MENTION} could the kiwi pods hit their memory limit?"),
                    Say(BOB, "kiwi pods restart about every ten minutes"),
                ],
                [Say(ALICE, f"{MENTION} so what do we know about kiwi so far?")],
            ],
        ),
        ScriptedThread(
            name="#proj-infra",
            channel="C08ABQ2WXYZ",
            marker="mango",
            retry_first_event=True,
            steps=[
                [Say(BOB, f"{MENTION} we need a plan for the mango database migration")],
                [Say(BOB, "the mango replica is 40 GB behind the primary")],
                [Say(ALICE, f"{MENTION} who asked first here, and about what?")],
            ],
        ),
    ]


@dataclass
class Check:
    name: str
    value: int | str
    expected: int | str
    ok: bool


Printer = Callable[[str], None]


class Demo:
    """Plays the script against a running stack, then reads everything back and checks."""

    def __init__(self, info: StackInfo, script: list[ScriptedThread], say: Printer = print):
        self.info = info
        self.script = script
        self.say = say
        self.retry_status: int | None = None

    # -- talking to the emulator --------------------------------------------------------

    async def _post_user_message(
        self, http: httpx.AsyncClient, thread: ScriptedThread, msg: Say
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"channel": thread.channel, "user": msg.user, "text": msg.text}
        if thread.root_ts:
            body["thread_ts"] = thread.root_ts
        resp = await http.post(f"{self.info.emulator_url}/_emulator/say", json=body)
        resp.raise_for_status()
        data = resp.json()
        self.say(f"  -> {thread.name:<14} {NAMES[msg.user]}: {readable(msg.text)}")
        return data

    async def replies(self, http: httpx.AsyncClient, thread: ScriptedThread) -> list[dict]:
        resp = await http.get(
            f"{self.info.slack_api_url}conversations.replies",
            params={
                "channel": thread.channel,
                "ts": thread.root_ts,
                "include_all_metadata": "true",
            },
            headers={"Authorization": f"Bearer {self.info.bot_token}"},
        )
        resp.raise_for_status()
        data = resp.json()
        if not data.get("ok"):
            raise RuntimeError(f"conversations.replies failed: {data.get('error')}")
        return list(data.get("messages", []))

    async def _wait_for_replies(
        self, http: httpx.AsyncClient, thread: ScriptedThread, count: int, seen: set[str]
    ) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            bot = [m for m in await self.replies(http, thread) if is_bot(m)]
            for m in bot:
                if m["ts"] not in seen:
                    seen.add(m["ts"])
                    self.say(f"  <- {thread.name:<14} thread-agent: {readable(m.get('text', ''))}")
            if len(bot) >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{thread.name}: waited {REPLY_TIMEOUT_SECONDS}s for reply #{count}")

    # -- the script ---------------------------------------------------------------------

    async def _play_thread(self, http: httpx.AsyncClient, thread: ScriptedThread) -> None:
        seen: set[str] = set()
        expected = 0
        for step in thread.steps:
            results = await asyncio.gather(
                *(self._post_user_message(http, thread, m) for m in step)
            )
            for msg, data in zip(step, results, strict=True):
                if not thread.root_ts:
                    thread.root_ts = data["ts"]
                    thread.first_event_ids = list(data.get("event_ids", []))
                thread.sent.append((data["ts"], msg))
            expected += len(step)
            await self._wait_for_replies(http, thread, expected, seen)
            if thread.retry_first_event and thread.first_event_ids and self.retry_status is None:
                await self._retry(http, thread)
                await asyncio.sleep(RETRY_SETTLE_SECONDS)

    async def _retry(self, http: httpx.AsyncClient, thread: ScriptedThread) -> None:
        """Re-send the thread's first event as Slack does when it saw no ack in time."""
        event_id = thread.first_event_ids[0]
        resp = await http.post(
            f"{self.info.emulator_url}/_emulator/redeliver",
            json={"event_id": event_id, "retry_num": 1, "reason": "http_timeout"},
        )
        resp.raise_for_status()
        self.retry_status = int(resp.json()["delivery"].get("status") or 0)
        self.say(
            f"  -> {thread.name:<14} (Slack retry of {event_id}, X-Slack-Retry-Num: 1:"
            f" proxy answered {self.retry_status})"
        )

    async def play(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(*(self._play_thread(http, t) for t in self.script))

    async def transcripts(self) -> dict[str, list[dict]]:
        async with httpx.AsyncClient(timeout=10) as http:
            return {t.name: await self.replies(http, t) for t in self.script}


def spoken(text: str) -> str:
    """What the agent stores of a message: the text without the bot's @mention."""
    from clrk.agents.slack_thread import spoken_text

    return spoken_text(text, BOT_USER_ID)


def is_bot(message: dict) -> bool:
    return bool(message.get("bot_id")) or message.get("user") == BOT_USER_ID


def check_run(
    script: list[ScriptedThread],
    transcripts: dict[str, list[dict]],
    stored: dict[str, list[str]],
    turns: int,
    retry_status: int | None,
) -> list[Check]:
    """Everything the demo promises, as named checks.

    ``stored`` maps each thread key to the texts of the human messages in its saved
    LangGraph state; ``turns`` is how many turns the store committed in all.
    """
    sent = sum(len(t.sent) for t in script)
    replies = {t.name: [m for m in transcripts[t.name] if is_bot(m)] for t in script}
    posted = sum(len(r) for r in replies.values())
    outbox_ids = [
        (m.get("metadata") or {}).get("event_payload", {}).get("outbox_id")
        for r in replies.values()
        for m in r
    ]
    duplicates = len(outbox_ids) - len(set(outbox_ids)) + max(0, posted - sent)
    lost = 0
    out_of_order = 0
    for t in script:
        texts = stored.get(t.key, [])
        wanted = [spoken(m.text) for _, m in sorted(t.sent, key=lambda s: float(s[0]))]
        lost += sum(1 for w in wanted if w not in texts)
        kept = [x for x in texts if x in wanted]
        # The simultaneous pair may be stored in either order; everything else in order.
        if sorted(kept) != sorted(wanted) or not _order_ok(kept, t):
            out_of_order += 1
    leaks = 0
    forgetful = 0
    for t in script:
        others = [o.marker for o in script if o is not t]
        first_text = spoken(t.sent[0][1].text) if t.sent else ""
        for m in replies[t.name]:
            text = m.get("text", "").lower()
            leaks += sum(1 for word in others if word in text)
            if "[turn 1]" not in text and _quotable(first_text) not in m.get("text", ""):
                forgetful += 1
    return [
        Check("user messages sent", sent, sent, True),
        Check(
            "Slack retry answered 2xx by the proxy",
            str(retry_status),
            "2xx",
            retry_status is not None and 200 <= retry_status < 300,
        ),
        Check("turns run", turns, sent, turns == sent),
        Check("replies posted", posted, sent, posted == sent),
        Check("duplicate replies", duplicates, 0, duplicates == 0),
        Check("lost messages", lost, 0, lost == 0),
        Check("threads stored out of order", out_of_order, 0, out_of_order == 0),
        Check("cross-thread leaks", leaks, 0, leaks == 0),
        Check("replies that forgot their thread", forgetful, 0, forgetful == 0),
    ]


def _quotable(text: str) -> str:
    """The part of the opening message the deterministic model quotes (first 40 chars)."""
    return " ".join(text.split())[:40]


def _order_ok(kept: list[str], thread: ScriptedThread) -> bool:
    """True when each step's messages come after all messages of earlier steps."""
    position = {text: i for i, text in enumerate(kept)}
    previous_max = -1
    for step in thread.steps:
        indexes = [position[spoken(m.text)] for m in step if spoken(m.text) in position]
        if indexes and min(indexes) < previous_max:
            return False
        previous_max = max(indexes, default=previous_max)
    return True


def read_back(info: StackInfo, script: list[ScriptedThread]) -> tuple[dict[str, list[str]], int]:
    """The human messages in each thread's saved state, and the number of committed turns."""
    from langchain_core.messages import HumanMessage

    from clrk.agents.model import DeterministicChatModel
    from clrk.agents.slack_thread import build_graph, make_checkpointer
    from clrk.state import open_store

    url = f"sqlite:///{Path(info.home) / 'agents' / info.agent / 'state.db'}"
    stored: dict[str, list[str]] = {}
    turns = 0
    with open_store(url) as store, make_checkpointer(url) as saver:
        graph = build_graph(DeterministicChatModel()).compile(checkpointer=saver)
        for t in script:
            state = graph.get_state({"configurable": {"thread_id": t.key}})
            messages = state.values.get("messages", []) if state else []
            stored[t.key] = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
            snapshot = store.get(t.key)
            turns += snapshot.version if snapshot else 0
    return stored, turns


def print_transcript(script: list[ScriptedThread], transcripts: dict[str, list[dict]]) -> None:
    for t in script:
        print(f"\n== {t.name}  (thread {t.key})")
        for m in transcripts[t.name]:
            who = NAMES.get(m.get("user", ""), "thread-agent" if is_bot(m) else m.get("user"))
            print(f"  {who:>12}: {readable(m.get('text', ''))}")


def print_checks(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    print(f"\n{'check':<{width}}  {'value':>6}  {'expected':>8}  result")
    for c in checks:
        print(f"{c.name:<{width}}  {c.value!s:>6}  {c.expected!s:>8}  {'ok' if c.ok else 'FAIL'}")


def fresh_home(home: Path) -> Path:
    """Empty ``home`` for a new run, refusing a folder that may hold somebody's data.

    Each run starts from nothing, so the folder is deleted first, but only when it is new,
    empty, marked by an earlier demo run, or holds nothing but what a demo makes; and not
    while a stack or another demo runs in it (``--home .clrk`` would be ``clrk up``'s).
    """
    home = home.resolve()  # a symlink to a folder: empty the folder, keep the link
    if home.exists():
        if not home.is_dir():
            raise ConfigError(f"--home {home} is a file, not a folder")
        refuse_a_running_stack(home)
        mark = home / DEMO_MARK
        owner = mark.read_text().strip() if mark.is_file() else ""
        if owner.isdigit() and int(owner) != os.getpid() and alive(int(owner)):
            raise ConfigError(f"another clrk demo (pid {owner}) is running in {home}")
        names = {entry.name for entry in home.iterdir()}
        if names and not mark.is_file() and not names <= DEMO_FILES:
            raise ConfigError(
                f"{home} holds files that clrk demo did not make, and the demo empties its "
                "folder first: give a new or empty folder with --home"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / DEMO_MARK).write_text(f"{os.getpid()}\n")
    return home


def run_demo(home: Path, manifest: Path) -> int:
    """Start the stack in a fresh ``home``, play the script, print and check; exit code."""
    home = fresh_home(home)
    started = time.monotonic()
    print(f"clrk demo: starting the local stack in {home} (agent {manifest}) ...")
    stack = LocalStack(home, manifest)
    with stack as info:
        print(f"  slack emulator {info.emulator_url}  auth proxy {info.proxy_url}")
        sandbox = choose_sandbox().kind  # the dispatcher makes the same choice
        print(f"  ingress {info.ingress_url}  dispatcher (1 worker, sandbox: {sandbox})")
        print("playing the conversation (-> delivered by Slack, <- replied by the agent):")
        script = default_script()
        demo = Demo(info, script)
        try:
            asyncio.run(demo.play())
        except TimeoutError as exc:
            print(f"\nFAILED: {exc}")
            stack.check_alive()
            return 1
        transcripts = asyncio.run(demo.transcripts())
        stored, turns = read_back(info, script)
    print_transcript(script, transcripts)
    checks = check_run(script, transcripts, stored, turns, demo.retry_status)
    print_checks(checks)
    elapsed = time.monotonic() - started
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed in {elapsed:.1f} s.")
    return 1 if failed else 0
