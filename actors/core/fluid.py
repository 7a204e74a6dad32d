"""Overload forecast from measured state: what the agent holds, how fast work arrives and
how fast it is done (DESIGN §4, "Overload prediction"; "measured beats reported").

A LOAD series alone must guess where a curve goes; an agent whose callers report
completions has its queue measured: the tasks it holds, the rate tasks are assigned to it
(two exponential averages, 15 s and 60 s, whose gap is the rate's trend) and the rate it
finishes them (``parallelism / work_s``). A fluid model of its queue over the horizon:

    arrivals  A = lambda0 h + b h h_d / 2         (b: the trend of the rate, damped)
    capacity  C = mu h
    tasks     n_h = max(n + A - C, lambda_h x work_s)

(the backlog grows or drains; it never drains below what the arrivals keep busy: Little's
law), in LOAD units (``unit`` per task), plus what the agent reports beyond the tasks
Ripple placed (load from elsewhere). Its spread: Poisson counts of arrivals and
departures, and a share of the level for what the model leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from actors.core.learning import ARRIVAL_TAUS_S

# Model error, as a share of the forecast backlog (set on seed 5 of the task traces in
# ``load.overload``; the figures are reported on a held-out seed).
LEVEL_ERROR = 0.15
# Completions an agent needs before its measured state replaces the LOAD trend.
MIN_COMPLETIONS = 5.0


@dataclass
class Measured:
    """Measured state of some rows (aligned arrays); ``use`` says which have enough."""

    use: np.ndarray  # bool
    tasks: np.ndarray  # held now (estimated)
    fast: np.ndarray  # assignments/s, 15 s average
    slow: np.ndarray  # assignments/s, 60 s average
    mu: np.ndarray  # tasks/s it finishes when busy
    work_s: np.ndarray
    unit: np.ndarray  # load per task
    outside: np.ndarray  # reported LOAD beyond Ripple's tasks (>= 0)


def forecast(
    m: Measured, horizon_s: float, damping_s: float, threshold: float, noise_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted LOAD at now + horizon, P(LOAD > threshold)) per row."""
    tau_f, tau_s = ARRIVAL_TAUS_S
    # A rate rising linearly at b lags it by tau in an average over tau: two averages give
    # b, and the rate now.
    b = (m.fast - m.slow) / (tau_s - tau_f)
    lam0 = np.maximum(m.fast + b * tau_f, 0.0)
    h_d = damping_s * (1.0 - np.exp(-horizon_s / damping_s))
    arrivals = np.maximum(lam0 * horizon_s + 0.5 * b * h_d * horizon_s, 0.0)
    lam_h = np.maximum(lam0 + b * h_d, 0.0)
    capacity = m.mu * horizon_s
    backlog = m.tasks + arrivals - capacity
    steady = lam_h * m.work_s
    queued = backlog > steady
    held = np.where(queued, backlog, steady)
    done = np.minimum(capacity, m.tasks + arrivals)
    # Still queueing at the horizon: a random walk of arrivals and departures. Drained:
    # the occupancy of a stable queue, about Poisson around its mean.
    var = np.where(queued, arrivals + done, steady)
    sd_tasks = np.sqrt(var + (LEVEL_ERROR * held) ** 2)
    predicted = held * m.unit + m.outside
    sd = np.sqrt((sd_tasks * m.unit) ** 2 + noise_floor**2)
    prob = ndtr((predicted - threshold) / sd)
    return predicted, prob
