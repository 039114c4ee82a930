"""Pure decisions, no I/O: no clock, no randomness, no logging, no awaits. The loops observe, these functions
decide, the loops act."""
