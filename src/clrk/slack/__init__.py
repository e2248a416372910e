"""clrk.slack: everything between Slack and the ingress, and between the agent and Slack.

``events`` reads Slack bodies (pure, no I/O); ``proxy`` verifies and forwards them;
``client`` posts replies through the Web API; ``emulator`` stands in for Slack locally.
The servers and the client are imported from their modules, so that reading an event
does not import an HTTP stack.
"""

from clrk.slack.events import (
    PARTITION_KEY_EXPRESSION,
    Ignored,
    ReplyPolicy,
    SlackMessage,
    parse_event,
)

__all__ = ["PARTITION_KEY_EXPRESSION", "Ignored", "ReplyPolicy", "SlackMessage", "parse_event"]
