"""The histogram accumulator: cumulative buckets, count and sum, and the bounds it refuses."""

from __future__ import annotations

import math

import pytest

from exporter.histogram import Histogram


def test_observations_land_in_cumulative_buckets_with_le_inclusive() -> None:
    histogram = Histogram([0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 7.0, 11.0, 1e9):
        histogram.observe(value)
    data = histogram.data()
    assert data.bounds == (0.1, 1.0, 10.0)
    assert data.cumulative_counts == (2, 4, 5, 7)
    assert data.count == 7
    assert data.sum == pytest.approx(0.05 + 0.1 + 0.5 + 1.0 + 7.0 + 11.0 + 1e9)


def test_data_is_a_frozen_copy() -> None:
    histogram = Histogram([1.0])
    before = histogram.data()
    histogram.observe(0.5)
    assert before.cumulative_counts == (0, 0)
    assert histogram.data().cumulative_counts == (1, 1)


@pytest.mark.parametrize("bounds", [[], [1.0, 1.0], [2.0, 1.0], [1.0, math.inf], [math.nan]])
def test_refuses_bounds_that_are_not_finite_and_strictly_increasing(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="bucket"):
        Histogram(bounds)
