"""clrk.runtime."""
