"""Overload prediction: a time-aware least-squares trend on recent LOAD history.

The fit is on timestamps in seconds (not sample index), vectorised over many agents at
once, so the operators' "who is about to overload" list costs a few array passes rather
than a Python loop per agent. The probability comes from the fit's own uncertainty:
the Student-t prediction interval of ordinary least squares at ``now + horizon``: the
spread of a new observation there (the ``1 +`` under the root), not the narrower
confidence band of the fitted mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import stdtr

from actors.core.config import ShardConfig
from actors.core.history import History
from actors.core.models import LOAD_CODE, OverloadPrediction, PredictParams
from actors.core.signals import LiveSignals


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
    se = resid_sd * np.sqrt(1.0 + 1.0 / safe_n + (horizon_s - xbar) ** 2 / safe_sxx)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (predicted - threshold) / se
        prob = np.where(se > 0, stdtr(dof, z), (predicted > threshold).astype(np.float64))
    prob = np.where(sufficient, prob, np.nan)
    return TrendFit(n.astype(np.int64), span, slope, predicted, prob, sufficient)


class Predictor:
    """Overload predictions of one shard's agents from their LOAD history."""

    def __init__(self, config: ShardConfig, history: History, signals: LiveSignals) -> None:
        self.config = config
        self.history = history
        self.signals = signals

    def fit(self, rows: np.ndarray, now: float, params: PredictParams) -> TrendFit:
        cfg = self.config
        ts, vals, mask = self.history.window(rows, LOAD_CODE, now - cfg.trend_lookback_s)
        return fit_trends(
            ts,
            vals,
            mask,
            now_s=now,
            horizon_s=params.horizon_s,
            threshold=params.threshold,
            min_samples=cfg.trend_min_samples,
            min_span_s=cfg.trend_min_span_s,
            noise_floor=cfg.trend_noise_floor,
        )

    def prediction(
        self, agent_id: str, row: int, fit: TrendFit, j: int, now: float, params: PredictParams
    ) -> OverloadPrediction:
        """The answer for the ``j``-th fitted row."""
        samples, span = int(fit.samples[j]), float(fit.span_s[j])
        common: dict[str, Any] = dict(
            agent_id=agent_id,
            current_load=self.signals.value(LOAD_CODE, row, now),
            samples=samples,
            span_s=span,
            horizon_s=params.horizon_s,
            threshold=params.threshold,
        )
        if not fit.sufficient[j]:
            cfg = self.config
            reason = (
                f"need at least {cfg.trend_min_samples} LOAD samples spanning "
                f"{cfg.trend_min_span_s:g} s in the last {cfg.trend_lookback_s:g} s; "
                f"have {samples} spanning {span:.3g} s"
            )
            return OverloadPrediction(
                status="insufficient_data",
                will_overload=None,
                probability=None,
                predicted_load=None,
                slope_per_s=None,
                reason=reason,
                **common,
            )
        prob = float(fit.probability[j])
        return OverloadPrediction(
            status="ok",
            will_overload=prob >= params.min_probability,
            probability=prob,
            predicted_load=float(min(max(fit.predicted[j], 0.0), 1.0)),
            slope_per_s=float(fit.slope_per_s[j]),
            **common,
        )
