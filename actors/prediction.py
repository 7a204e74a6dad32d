"""Overload prediction: a time-aware least-squares trend on recent LOAD history.

The fit is on timestamps in seconds (not sample index), vectorised over many agents at
once, so the operators' "who is about to overload" list costs a few array passes rather
than a Python loop per agent. The probability comes from the fit's own uncertainty:
the Student-t prediction interval of ordinary least squares at ``now + horizon``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import stdtr


@dataclass
class TrendFit:
    """Per-agent fit results (arrays aligned with the rows that were fitted)."""

    samples: np.ndarray  # int
    span_s: np.ndarray
    slope_per_s: np.ndarray
    predicted: np.ndarray  # unbounded fit at now + horizon
    probability: np.ndarray  # P(load > threshold at now + horizon); NaN where insufficient
    sufficient: np.ndarray  # bool


def fit_trends(
    ts_s: np.ndarray,
    load: np.ndarray,
    mask: np.ndarray,
    *,
    now_s: float,
    horizon_s: float,
    threshold: float,
    min_samples: int,
    min_span_s: float,
    noise_floor: float,
) -> TrendFit:
    """Fit ``load ~ a + b * t`` per column of (H, R) arrays, using only ``mask``ed cells."""
    m = mask.astype(np.float64)
    x = np.where(mask, ts_s - now_s, 0.0)  # seconds relative to now: well-conditioned
    y = np.where(mask, load, 0.0)
    n = m.sum(axis=0)
    safe_n = np.maximum(n, 1.0)
    xbar = x.sum(axis=0) / safe_n
    ybar = y.sum(axis=0) / safe_n
    dx = np.where(mask, x - xbar, 0.0)
    dy = np.where(mask, y - ybar, 0.0)
    sxx = (dx * dx).sum(axis=0)
    sxy = (dx * dy).sum(axis=0)
    syy = (dy * dy).sum(axis=0)
    span = np.where(
        n > 0, np.where(mask, x, -np.inf).max(axis=0) - np.where(mask, x, np.inf).min(axis=0), 0.0
    )
    sufficient = (n >= min_samples) & (span >= min_span_s) & (sxx > 0)
    safe_sxx = np.where(sxx > 0, sxx, 1.0)
    slope = np.where(sufficient, sxy / safe_sxx, np.nan)
    predicted = ybar + slope * (horizon_s - xbar)
    dof = np.maximum(n - 2.0, 1.0)
    resid_var = np.maximum(syy - slope * sxy, 0.0) / dof
    resid_sd = np.maximum(np.sqrt(resid_var), noise_floor)
    se = resid_sd * np.sqrt(1.0 / safe_n + (horizon_s - xbar) ** 2 / safe_sxx)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (predicted - threshold) / se
        prob = np.where(se > 0, stdtr(dof, z), (predicted > threshold).astype(np.float64))
    prob = np.where(sufficient, prob, np.nan)
    return TrendFit(n.astype(np.int64), span, slope, predicted, prob, sufficient)
