"""DEDUP: the store of committed keys and its changelog topic."""
