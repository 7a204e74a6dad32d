"""Overload prediction: a recency-weighted, damped least-squares trend on LOAD history.

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
from actors.core.fluid import Measured, forecast
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
    half_life_s: float | None = None,
    damping_s: float | None = None,
    level_shift: np.ndarray | None = None,
) -> TrendFit:
    """Fit ``load ~ a + b * t`` per column of (H, R) arrays, using only ``mask``ed cells.

    Plain least squares by default. ``half_life_s`` weighs each sample by
    ``2 ** (-age / half_life_s)`` (recent samples count more, so a spike is not averaged
    away by ten quiet minutes). ``damping_s`` bends the trend: the slope is followed for
    an effective ``damping_s * (1 - exp(-horizon / damping_s))`` seconds, as a damped
    trend does, instead of extrapolated linearly. ``level_shift`` moves the fitted level at
    ``now`` by what the history cannot know yet (the in-flight estimate since the last
    report).

    The spread is that of a *new observation* at ``now + horizon``: the residual noise,
    the uncertainty of the fitted line there, and, when weighted, a random-walk term that
    grows with the horizon (estimated from the increments between consecutive samples),
    so a series that wanders is not predicted with false certainty.
    """
    # Unmasked cells get weight 0, so the sums below need no masking of their own (their
    # times and values are finite: empty ring slots hold zeros).
    x = ts_s - now_s  # seconds relative to now: well-conditioned
    if half_life_s is None:
        w = mask.astype(np.float64)
    else:
        w = np.exp2(np.minimum(x, 0.0) / half_life_s)
        w *= mask
    n = mask.sum(axis=0).astype(np.float64)
    wsum = w.sum(axis=0)
    safe_w = np.where(wsum > 0, wsum, 1.0)
    n_eff = wsum**2 / np.maximum((w * w).sum(axis=0), 1e-300)
    wx = w * x
    xbar = wx.sum(axis=0) / safe_w
    ybar = (w * load).sum(axis=0) / safe_w
    dx = x - xbar
    dy = load - ybar
    wdx = w * dx
    sxx = (wdx * dx).sum(axis=0)
    sxy = (wdx * dy).sum(axis=0)
    syy = (w * dy * dy).sum(axis=0)
    span = np.where(
        n > 0, np.where(mask, x, -np.inf).max(axis=0) - np.where(mask, x, np.inf).min(axis=0), 0.0
    )
    sufficient = (n >= min_samples) & (span >= min_span_s) & (sxx > 0)
    safe_sxx = np.where(sxx > 0, sxx, 1.0)
    slope = np.where(sufficient, sxy / safe_sxx, np.nan)
    h = horizon_s if damping_s is None else damping_s * (1.0 - np.exp(-horizon_s / damping_s))
    level = ybar - slope * xbar
    if level_shift is not None:
        level = level + level_shift
    predicted = level + slope * h
    # Degrees of freedom from the effective sample size (equal weights: n - 2).
    dof = np.maximum(n_eff - 2.0, 1.0)
    resid_var = np.maximum(syy - slope * sxy, 0.0) / safe_w * n_eff / dof
    resid_var = np.maximum(resid_var, noise_floor**2)
    # The line's own uncertainty at h, with the weighted sums scaled to n_eff samples.
    safe_eff = np.maximum(n_eff, 1.0)
    var = resid_var * (1.0 + 1.0 / safe_eff + (h - xbar) ** 2 * safe_w / (safe_sxx * safe_eff))
    if half_life_s is not None:
        var = var + _walk_rate(ts_s, load, mask) * horizon_s
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (predicted - threshold) / se
        prob = np.where(se > 0, stdtr(dof, z), (predicted > threshold).astype(np.float64))
    prob = np.where(sufficient, prob, np.nan)
    return TrendFit(n.astype(np.int64), span, slope, predicted, prob, sufficient)


def _walk_rate(ts_s: np.ndarray, load: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per column, the variance per second of the increments between consecutive samples
    beyond what white noise explains (a random walk's diffusion rate; 0 for a steady or
    purely noisy series)."""
    key = np.where(mask, ts_s, np.inf)
    order = np.argsort(key, axis=0)
    cols = np.arange(key.shape[1])
    # Unmasked cells sort last, as inf: every time difference that involves one is not
    # finite (inf, or NaN between two), so it is left out below, as is every value
    # difference that involves one (their values are NaN).
    t = key[order, cols]
    v = np.where(mask, load, np.nan)[order, cols]
    with np.errstate(divide="ignore", invalid="ignore"):  # inf - inf: NaN, left out
        dt = t[1:] - t[:-1]
        dv = v[1:] - v[:-1]
        ok = np.isfinite(dt) & np.isfinite(dv) & (dt > 0)
        cnt = ok.sum(axis=0)
        rate = np.where(ok, dv * dv / np.where(ok, dt, 1.0), 0.0).sum(axis=0) / np.maximum(cnt, 1)
        # Lag-1 products: white noise makes consecutive increments anti-correlated
        # (-sigma^2), a walk does not; adding twice their mean removes the noise part.
        prod = np.where(ok[1:] & ok[:-1], dv[1:] * dv[:-1] / np.where(ok[1:], dt[1:], 1.0), 0.0)
        pairs = (ok[1:] & ok[:-1]).sum(axis=0)
        noise = np.where(pairs > 0, prod.sum(axis=0) / np.maximum(pairs, 1), 0.0)
    out: np.ndarray = np.where(cnt >= 2, np.maximum(rate + 2.0 * noise, 0.0), 0.0)
    return out


class Predictor:
    """Overload predictions of one shard's agents from their LOAD history."""

    def __init__(self, config: ShardConfig, history: History, signals: LiveSignals) -> None:
        self.config = config
        self.history = history
        self.signals = signals

    def fit(
        self,
        rows: np.ndarray,
        now: float,
        params: PredictParams,
        level_shift: np.ndarray | None = None,
        measured: Measured | None = None,
    ) -> TrendFit:
        """The LOAD trend of each row; where ``measured`` has enough (callers report the
        agent's completions), the forecast from its measured queue instead (``fluid``):
        it knows what is arriving and how fast it is done, where a trend guesses."""
        trend = self._trend(rows, now, params, level_shift)
        if measured is None or not measured.use.any():
            return trend
        use = measured.use
        pick = Measured(*(getattr(measured, f)[use] for f in Measured.__dataclass_fields__))
        cfg = self.config
        predicted, prob = forecast(
            pick, params.horizon_s, cfg.trend_damping_s, params.threshold, cfg.trend_noise_floor
        )
        current = pick.tasks * pick.unit + pick.outside
        trend.predicted[use] = predicted
        trend.probability[use] = prob
        trend.slope_per_s[use] = (predicted - current) / params.horizon_s
        trend.sufficient[use] = True
        return trend

    def _trend(
        self,
        rows: np.ndarray,
        now: float,
        params: PredictParams,
        level_shift: np.ndarray | None,
    ) -> TrendFit:
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
            half_life_s=cfg.trend_half_life_s,
            damping_s=cfg.trend_damping_s,
            level_shift=level_shift,
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
