"""The one percentile every figure uses: the page's tiles, `/api/metrics`, the cost report, the
live-data tool, the evals' report and the benchmarks."""

import math


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest measured value with at least p% of the values at or below it
    (never an interpolation); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]
