"""clrk.slack."""
