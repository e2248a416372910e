"""clrk.slack: everything between Slack and the ingress, and between the agent and Slack.

``events`` reads Slack bodies (pure, no I/O); ``proxy`` verifies and forwards them;
``client`` posts replies through the Web API; ``emulator`` stands in for Slack locally;
``commands`` adds ``clrk slack emulator`` and ``clrk slack proxy``. The servers are
imported from their modules, so that reading an event does not import an HTTP stack.
"""

from clrk.slack.client import find_reply, make_client, post_reply, reply_metadata, split_text
from clrk.slack.events import (
    PARTITION_KEY_EXPRESSION,
    REPLY_POLICY_ENV,
    Ignored,
    ReplyPolicy,
    SlackMessage,
    parse_event,
)

__all__ = [
    "PARTITION_KEY_EXPRESSION",
    "REPLY_POLICY_ENV",
    "Ignored",
    "ReplyPolicy",
    "SlackMessage",
    "find_reply",
    "make_client",
    "parse_event",
    "post_reply",
    "reply_metadata",
    "split_text",
]
