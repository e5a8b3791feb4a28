"""A histogram accumulator: observe values, read back frozen cumulative buckets, count and sum.

The data it returns (``snapshot.HistogramData``) is what the metric table renders as a Prometheus
histogram. Bucket bounds are upper bounds (``le``) in increasing order; ``+Inf`` is implicit.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

from exporter.snapshot import HistogramData


def validate_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    """The bounds as a tuple, or ValueError when they are empty, not finite or not strictly increasing."""
    result = tuple(float(bound) for bound in bounds)
    if not result:
        raise ValueError("a histogram needs at least one bucket bound")
    if not all(math.isfinite(bound) for bound in result):
        raise ValueError("bucket bounds must be finite numbers (+Inf is always added)")
    if any(later <= earlier for earlier, later in itertools.pairwise(result)):
        raise ValueError("bucket bounds must be strictly increasing")
    return result


class Histogram:
    """Counts observations per bucket; ``data()`` is a frozen, cumulative view of them."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = validate_bounds(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = less or equal).
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def data(self) -> HistogramData:
        cumulative: list[int] = []
        running = 0
        for count in self._counts:
            running += count
            cumulative.append(running)
        return HistogramData(bounds=self._bounds, cumulative_counts=tuple(cumulative), sum=self._sum)
