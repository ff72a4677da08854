"""Means with 95 % confidence intervals: Wilson's score interval for proportions (every value 0 or 1), the normal
approximation (mean +- 1.96 standard errors) for other values."""
from __future__ import annotations

import math
from typing import Iterable

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, count: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / count``."""
    if count == 0:
        raise ValueError("no observations")
    p = successes / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    # the bounds hold p itself; rounding in centre - half can put one a hair past it (3e-18 above 0 of 100)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def normal_interval(values: list[float], z: float = Z95) -> tuple[float, float]:
    """mean +- z * sample standard deviation / sqrt(n); a single value has no spread to estimate (its own bounds)."""
    n = len(values)
    if n == 0:
        raise ValueError("no observations")
    mean = sum(values) / n
    if n == 1:
        return mean, mean
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(variance / n)
    return mean - half, mean + half


def is_proportion(values: list[float]) -> bool:
    return all(v in (0, 1) for v in values)


def summarise_values(values: Iterable[float | None]) -> dict | None:
    """{mean, ci_low, ci_high, count, interval} of the values that were measured (None left out); None when none were."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    if is_proportion(values):
        low, high = wilson_interval(int(sum(values)), len(values))
        interval = "wilson"
    else:
        low, high = normal_interval(values)
        interval = "normal"
    return {"mean": sum(values) / len(values), "ci_low": low, "ci_high": high, "count": len(values), "interval": interval}
