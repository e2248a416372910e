"""clrk.agents."""
