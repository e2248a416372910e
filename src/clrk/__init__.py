"""clrk: stateless, per-event agents over durable state."""

__version__ = "0.1.0"
