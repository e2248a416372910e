"""A local stand-in for Slack (a fake, for development and tests): Web API, event sender
with Slack's retries, and a page to chat with an agent by hand."""

from clrk.slack.emulator.app import Emulator, create_app

__all__ = ["Emulator", "create_app"]
