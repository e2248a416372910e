"""clrk.state."""
