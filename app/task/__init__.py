"""The partition task and its manager: lifecycle, prefetch window, commits in offset order."""
