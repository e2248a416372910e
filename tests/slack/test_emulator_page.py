"""The emulator's page in headless Chromium: a person writes, the agent's reply appears."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from slack_sdk import WebClient

from clrk.slack.emulator import create_app
from clrk.slack.emulator.app import DEFAULT_BOT_TOKEN
from support import need_server, serve, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_write_in_a_thread_and_see_the_reply_arrive() -> None:
    if not CHROMIUM.exists() or not os.access(CHROMIUM, os.X_OK):
        need_server("Chromium", f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    app = create_app(signing_secret="page-secret", request_url=None)
    with serve(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.locator("#channels button.channel", has_text="proj-support").click()
            page.click("#mention")
            page.fill("#text", page.input_value("#text") + "is staging down?")
            page.click("#compose button[type=submit]")

            # The message is stored as a person's, with the bot mention Slack-encoded.
            def stored() -> list[dict]:
                answer = httpx.get(url + "/_emulator/messages", params={"channel": "C07ZP1MEH5S"})
                return answer.json()["messages"]

            wait_for(lambda: len(stored()) == 1, what="the message from the page")
            [message] = stored()
            assert message["text"] == "<@U07ZN3CDV8X> is staging down?"
            expect(page.get_by_test_id("messages")).to_contain_text("@thread-agent is staging")

            # The agent answers in the thread through the Web API; the open thread shows it.
            WebClient(token=DEFAULT_BOT_TOKEN, base_url=url + "/api/").chat_postMessage(
                channel="C07ZP1MEH5S", thread_ts=message["ts"], text="Staging is fine."
            )
            replies = page.get_by_test_id("replies")
            expect(replies.locator(".msg.bot")).to_contain_text("Staging is fine.")

            # A person replies in the thread from the page.
            page.fill("#reply-text", "thanks")
            page.click("#reply button[type=submit]")
            expect(replies.locator(".msg")).to_have_count(3)
            assert [m["text"] for m in stored()][-1] == "thanks"
            assert stored()[-1]["thread_ts"] == message["ts"]
            expect(page.get_by_test_id("messages")).to_contain_text("2 replies")
        finally:
            browser.close()
