"""The Web API client against the emulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clrk.errors import ConfigError, PermanentSlackError, SlackError
from clrk.slack.client import (
    PROXY_PLACEHOLDER_TOKEN,
    find_reply,
    make_client,
    post_reply,
    reply_metadata,
    split_text,
)
from clrk.slack.emulator import Emulator, create_app
from clrk.slack.emulator.app import DEFAULT_BOT_TOKEN
from support import serve

CHANNEL = "C07ZP1MEH5S"
ROOT = "1784021532.401829"


@pytest.fixture
def emulator() -> Iterator[tuple[str, Emulator]]:
    app = create_app(signing_secret="s", request_url=None)
    with serve(app) as url:
        yield url, app.state.emulator


def _fail_next(url: str, error: str, **extra: Any) -> None:
    answer = httpx.post(
        url + "/_emulator/failures", json={"channel": CHANNEL, "error": error, **extra}
    )
    assert answer.json()["ok"]


def _posts(emulator: Emulator) -> int:
    return sum(1 for call in emulator.api.calls if call["method"] == "chat.postMessage")


def test_make_client_reads_the_environment(
    emulator: tuple[str, Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = emulator
    monkeypatch.setenv("SLACK_API_URL", url + "/api")
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_BOT_TOKEN)
    client = make_client()
    assert client.base_url == url + "/api/"
    assert client.auth_test()["ok"]
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        make_client()


def test_reply_in_thread_with_metadata_and_find_it(emulator: tuple[str, Emulator]) -> None:
    url, _ = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    assert not find_reply(client, channel=CHANNEL, thread_ts=ROOT, outbox_id="ob-1")
    [ts] = post_reply(
        client,
        channel=CHANNEL,
        thread_ts=ROOT,
        text="hello",
        metadata=reply_metadata("ob-1", turn=3),
    )
    replies = client.conversations_replies(channel=CHANNEL, ts=ROOT, include_all_metadata=True)
    [message] = replies["messages"]
    assert message["ts"] == ts and message["thread_ts"] == ROOT
    assert message["metadata"] == {
        "event_type": "clrk_reply",
        "event_payload": {"outbox_id": "ob-1", "turn": 3, "part": 1, "parts": 1},
    }
    assert find_reply(client, channel=CHANNEL, thread_ts=ROOT, outbox_id="ob-1")
    assert not find_reply(client, channel=CHANNEL, thread_ts=ROOT, outbox_id="ob-2")


def test_a_429_on_the_first_post_is_retried(emulator: tuple[str, Emulator]) -> None:
    url, state = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    _fail_next(url, "ratelimited", retry_after=0)
    posted = post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="after the limit")
    assert len(posted) == 1
    assert _posts(state) == 2  # refused once, then sent after Retry-After
    thread = httpx.get(
        url + "/_emulator/messages", params={"channel": CHANNEL, "thread_ts": ROOT}
    ).json()
    assert [m["text"] for m in thread["messages"]] == ["after the limit"]


def test_no_request_starts_after_the_deadline(emulator: tuple[str, Emulator]) -> None:
    """Bug: a Retry-After longer than the deliverer's hold on its outbox entry was slept
    through and the reply posted late, after another run had taken the entry and posted
    it: the same reply twice. Within a deadline, such a 429 is raised instead."""
    import time

    from clrk.slack.client import within

    url, state = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    _fail_next(url, "ratelimited", retry_after=20)
    started = time.monotonic()
    with within(client, started + 5), pytest.raises(SlackError):
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="too late")
    assert time.monotonic() - started < 3, "it did not sleep out the 20 s"
    assert _posts(state) == 1
    _fail_next(url, "ratelimited", retry_after=0)
    with within(client, time.monotonic() + 5):  # a short wait fits: retried, posted
        assert len(post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="in time")) == 1
    with within(client, time.monotonic() - 1), pytest.raises(SlackError, match="deadline"):
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="past it")
    assert _posts(state) == 3


def test_rate_limit_that_does_not_lift_is_reported(emulator: tuple[str, Emulator]) -> None:
    url, state = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN, max_rate_limit_retries=1)
    _fail_next(url, "ratelimited", retry_after=0, count=2)
    with pytest.raises(SlackError) as raised:
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="x")
    assert raised.value.code == "ratelimited"
    assert not isinstance(raised.value, PermanentSlackError)
    assert _posts(state) == 2


@pytest.mark.parametrize(
    "error", ["channel_not_found", "not_in_channel", "is_archived", "invalid_auth"]
)
def test_permanent_errors_are_not_retried(emulator: tuple[str, Emulator], error: str) -> None:
    url, state = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    _fail_next(url, error)
    with pytest.raises(PermanentSlackError) as raised:
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="x")
    assert (raised.value.code, raised.value.method) == (error, "chat.postMessage")
    assert _posts(state) == 1


def test_a_transient_error_is_not_called_permanent(emulator: tuple[str, Emulator]) -> None:
    url, _ = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    _fail_next(url, "internal_error")
    with pytest.raises(SlackError) as raised:
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text="x")
    assert not isinstance(raised.value, PermanentSlackError)


def _long_text(chars: int) -> str:
    lines, n = [], 0
    while n < chars:
        line = " ".join(f"w{n + i}" for i in range(12))
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines)[:chars]


def test_a_45000_character_reply_arrives_in_order(emulator: tuple[str, Emulator]) -> None:
    url, _ = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    text = _long_text(45_000)
    posted = post_reply(
        client, channel=CHANNEL, thread_ts=ROOT, text=text, metadata=reply_metadata("ob-long")
    )
    thread = client.conversations_replies(channel=CHANNEL, ts=ROOT, include_all_metadata=True)
    messages = thread["messages"]
    assert [m["ts"] for m in messages] == posted
    assert len(posted) == 12  # 45,000 characters at 4,000 a message, cut at line ends
    assert all(len(m["text"]) <= 4000 for m in messages)
    assert "\n".join(m["text"] for m in messages) == text  # nothing lost, nothing reordered
    parts = [m["metadata"]["event_payload"]["part"] for m in messages]
    assert parts == list(range(1, 13))
    assert {m["metadata"]["event_payload"]["parts"] for m in messages} == {12}


def test_resume_finishes_a_reply_cut_short(
    emulator: tuple[str, Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = emulator
    client = make_client(base_url=url + "/api/", token=DEFAULT_BOT_TOKEN)
    text = _long_text(9_000)  # three messages
    meta = reply_metadata("ob-cut")
    calls = 0
    real_post = client.chat_postMessage

    def second_post_fails(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            _fail_next(url, "internal_error")
        return real_post(**kwargs)

    monkeypatch.setattr(client, "chat_postMessage", second_post_fails)
    with pytest.raises(SlackError):
        post_reply(client, channel=CHANNEL, thread_ts=ROOT, text=text, metadata=meta)
    assert find_reply(client, channel=CHANNEL, thread_ts=ROOT, outbox_id="ob-cut")
    posted = post_reply(
        client, channel=CHANNEL, thread_ts=ROOT, text=text, metadata=meta, resume=True
    )
    assert len(posted) == 2
    thread = client.conversations_replies(channel=CHANNEL, ts=ROOT)["messages"]
    assert "\n".join(m["text"] for m in thread) == text


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, ["short"]),
        ("aaaa bbbb cccc", 9, ["aaaa bbbb", "cccc"]),
        ("line one\nline two", 12, ["line one", "line two"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("one two\nthree four five", 10, ["one two", "three four", "five"]),
    ],
)
def test_split_text(text: str, limit: int, expected: list[str]) -> None:
    assert split_text(text, limit) == expected


def _swapping_proxy(upstream: str, real_token: str) -> Starlette:
    """Stands in for the egress proxy's credential rule: swaps the placeholder bearer."""

    async def forward(request: Request) -> Response:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        if headers.get("authorization") == f"Bearer {PROXY_PLACEHOLDER_TOKEN}":
            headers["authorization"] = f"Bearer {real_token}"
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                request.method,
                upstream + request.url.path,
                params=request.query_params,
                headers=headers,
                content=await request.body(),
            )
        keep = {
            k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")
        }
        return Response(answer.content, status_code=answer.status_code, headers=keep)

    return Starlette(routes=[Route("/api/{method}", forward, methods=["GET", "POST"])])


def test_placeholder_token_works_through_a_swapping_proxy(
    emulator: tuple[str, Emulator],
) -> None:
    url, _ = emulator
    direct = make_client(base_url=url + "/api/", token=PROXY_PLACEHOLDER_TOKEN)
    with pytest.raises(PermanentSlackError) as refused:
        post_reply(direct, channel=CHANNEL, thread_ts=ROOT, text="x")
    assert refused.value.code == "invalid_auth"
    with serve(_swapping_proxy(url, DEFAULT_BOT_TOKEN)) as proxy_url:
        client = make_client(base_url=proxy_url + "/api/", token=PROXY_PLACEHOLDER_TOKEN)
        _fail_next(url, "ratelimited", retry_after=0)  # Retry-After survives the hop
        posted = post_reply(
            client,
            channel=CHANNEL,
            thread_ts=ROOT,
            text="via proxy",
            metadata=reply_metadata("ob-p"),
        )
        assert len(posted) == 1
        assert find_reply(client, channel=CHANNEL, thread_ts=ROOT, outbox_id="ob-p")
