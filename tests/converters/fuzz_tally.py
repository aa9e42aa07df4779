"""Counts of fuzz inputs per reader, shown in pytest's terminal summary (see conftest.py).

A fuzz test that passes says nothing about how much it tried; these counters make every run show
how many inputs reached each reader and how each ended (read, or refused with a tireg error).
"""

from __future__ import annotations

from collections import Counter

#: title -> outcome -> count; filled by the fuzz modules, printed once at the end of the run
TALLIES: dict[str, Counter[str]] = {}


def tally(title: str) -> Counter[str]:
    """The counter shown under ``title`` (created on first use)."""
    return TALLIES.setdefault(title, Counter())


def summary_lines() -> list[str]:
    """``title: N inputs (outcome n, ...)`` for each tally that counted anything."""
    return [
        f"{title}: {sum(counts.values())} inputs ("
        + ", ".join(f"{outcome} {n}" for outcome, n in sorted(counts.items()))
        + ")"
        for title, counts in sorted(TALLIES.items())
        if counts
    ]
