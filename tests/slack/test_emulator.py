"""The Slack emulator: Web API answers, event delivery with Slack's retries, controls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from slack_helpers import IngressStandIn, Receiver
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from clrk.slack import proxy as proxy_module
from clrk.slack.emulator import create_app
from clrk.slack.emulator.app import DEFAULT_BOT_TOKEN, DEFAULT_BOT_USER_ID
from clrk.slack.events import SlackMessage, parse_event
from support import serve, wait_for

SECRET = "emulator-test-secret"
CHANNEL = "C07ZP1MEH5S"


@pytest.fixture
def emulator_url() -> Iterator[str]:
    with serve(create_app(signing_secret=SECRET, request_url=None)) as url:
        yield url


def _client(url: str, token: str = DEFAULT_BOT_TOKEN) -> WebClient:
    return WebClient(token=token, base_url=url + "/api/")


def test_auth_test_and_token_checks(emulator_url: str) -> None:
    answer = _client(emulator_url).auth_test()
    assert answer["user_id"] == DEFAULT_BOT_USER_ID and answer["team_id"] == "T07ZK4QW9PL"
    with pytest.raises(SlackApiError) as wrong:
        _client(emulator_url, token="xoxb-wrong").auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    anonymous = httpx.post(emulator_url + "/api/auth.test").json()
    assert anonymous == {"ok": False, "error": "not_authed"}
    form = httpx.post(emulator_url + "/api/auth.test", data={"token": DEFAULT_BOT_TOKEN}).json()
    assert form["ok"] is True
    assert httpx.post(emulator_url + "/api/no.such").json()["error"] == "unknown_method"


def test_post_in_thread_with_metadata_and_read_back(emulator_url: str) -> None:
    client = _client(emulator_url)
    say = httpx.post(emulator_url + "/_emulator/say", json={"channel": CHANNEL, "text": "root"})
    root = say.json()["ts"]
    metadata = {"event_type": "clrk_reply", "event_payload": {"outbox_id": "ob-1", "turn": 1}}
    posted = client.chat_postMessage(channel=CHANNEL, thread_ts=root, text="hi", metadata=metadata)
    assert posted["message"]["thread_ts"] == root
    assert isinstance(posted["ts"], str) and posted["ts"] > root

    plain = client.conversations_replies(channel=CHANNEL, ts=root)["messages"]
    assert [m["text"] for m in plain] == ["root", "hi"]
    assert "metadata" not in plain[1]
    full = client.conversations_replies(channel=CHANNEL, ts=root, include_all_metadata=True)
    assert full["messages"][1]["metadata"] == metadata
    assert full["messages"][0]["reply_count"] == 1

    form = httpx.post(  # form-encoded, metadata as a JSON string, as curl users send it
        emulator_url + "/api/chat.postMessage",
        data={"channel": CHANNEL, "text": "top", "metadata": json.dumps(metadata)},
        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
    ).json()
    history = client.conversations_history(channel=CHANNEL)["messages"]
    assert [m["ts"] for m in history] == [form["ts"], root]  # newest first, no replies

    stored = httpx.get(
        emulator_url + "/_emulator/messages", params={"channel": CHANNEL, "thread_ts": root}
    ).json()["messages"]
    assert stored[1]["metadata"] == metadata and stored[1]["bot_id"]


def test_replies_listed_when_the_parent_came_from_elsewhere(emulator_url: str) -> None:
    client = _client(emulator_url)
    client.chat_postMessage(channel="C0NEWCHAN1", thread_ts="1784021532.401829", text="a")
    client.chat_postMessage(channel="C0NEWCHAN1", thread_ts="1784021532.401829", text="b")
    replies = client.conversations_replies(channel="C0NEWCHAN1", ts="1784021532.401829")
    assert [m["text"] for m in replies["messages"]] == ["a", "b"]
    with pytest.raises(SlackApiError) as missing:
        client.conversations_replies(channel="C0NEWCHAN1", ts="1.000001")
    assert missing.value.response["error"] == "thread_not_found"


def test_pagination_with_cursor(emulator_url: str) -> None:
    client = _client(emulator_url)
    root = client.chat_postMessage(channel=CHANNEL, text="root")["ts"]
    for i in range(5):
        client.chat_postMessage(channel=CHANNEL, thread_ts=root, text=f"r{i}")
    texts, cursor = [], None
    while True:
        page = client.conversations_replies(channel=CHANNEL, ts=root, limit=2, cursor=cursor)
        texts += [m["text"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not page["has_more"]:
            break
    assert texts == ["root", "r0", "r1", "r2", "r3", "r4"]


@pytest.mark.filterwarnings("ignore:The top-level `text`:UserWarning")
def test_text_rules(emulator_url: str) -> None:
    client = _client(emulator_url)
    for kwargs, error in [({"text": ""}, "no_text"), ({"text": "x" * 40_001}, "msg_too_long")]:
        with pytest.raises(SlackApiError) as refused:
            client.chat_postMessage(channel=CHANNEL, **kwargs)
        assert refused.value.response["error"] == error
    assert client.chat_postMessage(channel=CHANNEL, text="x" * 40_000)["ok"]


def test_per_channel_rate_limit() -> None:
    app = create_app(signing_secret=SECRET, request_url=None, rate_limit_per_minute=2)
    with serve(app) as url:
        headers = {"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"}
        posts = [
            httpx.post(
                url + "/api/chat.postMessage",
                headers=headers,
                json={"channel": CHANNEL, "text": str(i)},
            )
            for i in range(3)
        ]
        assert [p.status_code for p in posts] == [200, 200, 429]
        assert posts[2].json() == {"ok": False, "error": "ratelimited"}
        assert 1 <= int(posts[2].headers["Retry-After"]) <= 60
        other = httpx.post(
            url + "/api/chat.postMessage",
            headers=headers,
            json={"channel": "C08ABQ2WXYZ", "text": "other channel"},
        )
        assert other.status_code == 200


def test_injected_failures_are_one_off(emulator_url: str) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"}
    post = {"channel": CHANNEL, "text": "x"}
    httpx.post(
        emulator_url + "/_emulator/failures",
        json={"channel": CHANNEL, "error": "ratelimited", "retry_after": 7},
    )
    first = httpx.post(emulator_url + "/api/chat.postMessage", headers=headers, json=post)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    httpx.post(
        emulator_url + "/_emulator/failures", json={"channel": CHANNEL, "error": "is_archived"}
    )
    second = httpx.post(emulator_url + "/api/chat.postMessage", headers=headers, json=post)
    assert second.json() == {"ok": False, "error": "is_archived"}
    third = httpx.post(emulator_url + "/api/chat.postMessage", headers=headers, json=post)
    assert third.json()["ok"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"text": "no channel"},
        {"channel": CHANNEL},
        {"channel": CHANNEL, "text": "x", "thread_ts": 1784021532.401829},
    ],
)
def test_say_refuses_bad_input(emulator_url: str, body: dict[str, Any]) -> None:
    answer = httpx.post(emulator_url + "/_emulator/say", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_arguments" and answer.json()["detail"]
    assert httpx.post(emulator_url + "/_emulator/say", content=b"nope").status_code == 400


def test_mention_is_delivered_as_app_mention_and_message() -> None:
    receiver = Receiver(SECRET)
    with serve(receiver.app()) as request_url:
        app = create_app(signing_secret=SECRET, request_url=request_url)
        with serve(app) as url:
            said = httpx.post(
                url + "/_emulator/say",
                json={"channel": CHANNEL, "text": f"<@{DEFAULT_BOT_USER_ID}> look at this/that"},
            ).json()
            wait_for(lambda: len(receiver.arrivals) == 2, what="two deliveries")
            dm = httpx.post(
                url + "/_emulator/say", json={"channel": "D07ZN4F2Q1A", "text": "psst"}
            ).json()
            wait_for(lambda: len(receiver.arrivals) == 3, what="the DM")
    assert len(said["event_ids"]) == 2 and len(set(said["event_ids"])) == 2
    assert len(dm["event_ids"]) == 1
    assert all(a["valid"] for a in receiver.arrivals)
    types = sorted(a["json"]["event"]["type"] for a in receiver.arrivals[:2])
    assert types == ["app_mention", "message"]
    parsed = [parse_event(a["json"], bot_user_id=None, bot_id=None) for a in receiver.arrivals]
    assert all(isinstance(p, SlackMessage) for p in parsed)
    assert parsed[0].dedupe_id == parsed[1].dedupe_id  # one underlying message
    assert parsed[0].ts == said["ts"] and parsed[2].kind == "im"
    assert b"this\\/that" in receiver.arrivals[0]["body"]  # Slack's escaping, signed as sent


def test_retries_after_no_ack_within_the_timeout() -> None:
    receiver = Receiver(SECRET, script=[(200, 1.0), (500, 0.0)])  # slow, then an error
    with serve(receiver.app()) as request_url:
        app = create_app(
            signing_secret=SECRET,
            request_url=request_url,
            ack_timeout_seconds=0.3,
            retry_delays_seconds=(0.0, 0.05, 0.05),
        )
        with serve(app) as url:
            said = httpx.post(
                url + "/_emulator/say", json={"channel": CHANNEL, "text": "hello"}
            ).json()
            wait_for(lambda: len(receiver.arrivals) == 3, what="three attempts")
            deliveries = httpx.get(url + "/_emulator/deliveries").json()["deliveries"]
    [event_id] = said["event_ids"]
    assert [a["json"]["event_id"] for a in receiver.arrivals] == [event_id] * 3
    assert [a["headers"].get("x-slack-retry-num") for a in receiver.arrivals] == [None, "1", "2"]
    assert [a["headers"].get("x-slack-retry-reason") for a in receiver.arrivals] == [
        None,
        "http_timeout",
        "http_error",
    ]
    assert all(a["valid"] for a in receiver.arrivals)
    bodies = {a["body"] for a in receiver.arrivals}
    assert len(bodies) == 1  # the same bytes, each attempt signed anew
    assert [(d["attempt"], d["ok"], d["reason"]) for d in deliveries] == [
        (1, False, "http_timeout"),
        (2, False, "http_error"),
        (3, True, None),
    ]
    assert all(d["latency_ms"] is not None for d in deliveries)


def test_gives_up_after_max_retries() -> None:
    receiver = Receiver(SECRET, script=[(500, 0.0)] * 10)
    with serve(receiver.app()) as request_url:
        app = create_app(
            signing_secret=SECRET,
            request_url=request_url,
            max_retries=3,
            retry_delays_seconds=(0.0,),
        )
        with serve(app) as url:
            httpx.post(url + "/_emulator/say", json={"channel": CHANNEL, "text": "x"})
            wait_for(lambda: len(receiver.arrivals) == 4, what="four attempts")
            wait_for(
                lambda: len(httpx.get(url + "/_emulator/deliveries").json()["deliveries"]) == 4,
                what="four records",
            )
    assert [a["headers"].get("x-slack-retry-num") for a in receiver.arrivals] == [
        None,
        "1",
        "2",
        "3",
    ]


def test_redeliver_resends_with_retry_headers() -> None:
    receiver = Receiver(SECRET)
    with (
        serve(receiver.app()) as request_url,
        serve(create_app(signing_secret=SECRET, request_url=request_url)) as url,
    ):
        [event_id] = httpx.post(
            url + "/_emulator/say", json={"channel": CHANNEL, "text": "x"}
        ).json()["event_ids"]
        wait_for(lambda: len(receiver.arrivals) == 1, what="first delivery")
        again = httpx.post(
            url + "/_emulator/redeliver", json={"event_id": event_id, "retry_num": 2}
        ).json()
        unknown = httpx.post(url + "/_emulator/redeliver", json={"event_id": "EvNOPE"})
    assert again["delivery"]["ok"] and again["delivery"]["attempt"] == 3
    assert receiver.arrivals[1]["headers"]["x-slack-retry-num"] == "2"
    assert receiver.arrivals[1]["headers"]["x-slack-retry-reason"] == "http_timeout"
    assert receiver.arrivals[1]["body"] == receiver.arrivals[0]["body"]
    assert unknown.status_code == 404


def test_through_the_proxy_a_mention_and_a_retry_are_one_event() -> None:
    """Emulator -> auth proxy -> ingress stand-in, all over real HTTP."""
    ingress = IngressStandIn()
    with serve(ingress.app()) as ingress_url:
        proxy = proxy_module.create_app(
            signing_secret=SECRET, ingress_url=ingress_url, routes="slack-thread-agent"
        )
        with (
            serve(proxy) as proxy_url,
            serve(create_app(signing_secret=SECRET, request_url=proxy_url)) as url,
        ):
            said = httpx.post(
                url + "/_emulator/say",
                json={"channel": CHANNEL, "text": f"<@{DEFAULT_BOT_USER_ID}> hi"},
            ).json()
            wait_for(lambda: len(ingress.requests) == 2, what="both forwarded")
            httpx.post(url + "/_emulator/redeliver", json={"event_id": said["event_ids"][0]})
            _client(url).chat_postMessage(channel=CHANNEL, thread_ts=said["ts"], text="ok")
            wait_for(
                lambda: httpx.get(proxy_url + "/metrics").json()["ignored"] == 1,
                what="the bot's echo",
            )
            metrics = httpx.get(proxy_url + "/metrics").json()
    assert len(ingress.requests) == 3
    assert list(ingress.stored) == [f"slack:T07ZK4QW9PL:{CHANNEL}:{said['ts']}"]
    assert metrics["retries_received"] == 1 and metrics["forwarded"] == 3
