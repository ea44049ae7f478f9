"""The seed spread: when a difference between two methods is larger than seed-to-seed noise.

A method's numbers over seeds are summarised as ``(mean, std)``, ``std`` the sample standard
deviation (0 for one seed). Two methods ``a`` and ``b`` differ *inside the seed spread* when

    |mean_b − mean_a| <= std_a + std_b

With three seeds nothing finer can be claimed, so every page and every verdict on one uses this rule.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

MeanStd = tuple[float, float]


def seed_stats(values: Sequence[float]) -> MeanStd:
    """``(mean, std)`` of one method's values over seeds; the std is 0 for a single seed."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def seed_spread(a: MeanStd, b: MeanStd) -> float:
    """``std_a + std_b``: how far apart two means may lie before they differ beyond the seed spread."""
    return a[1] + b[1]


def within_spread(a: MeanStd, b: MeanStd) -> bool:
    """Whether ``|mean_b − mean_a| <= std_a + std_b``: the two cannot be told apart over these seeds."""
    return abs(b[0] - a[0]) <= seed_spread(a, b)
