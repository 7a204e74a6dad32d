"""The capacity model recovers known costs from synthetic sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from load.capacity import fit, predict


@pytest.mark.parametrize("params,cores", [((4e-6, 2e-6, 0.05), 2.0), ((2e-6, 4e-6, 0.1), 16.0)])
def test_fit_reproduces_the_sweep_that_made_the_data(params, cores: float) -> None:
    shards = np.array([1.0, 2.0, 4.0, 8.0])
    measured = predict(params, shards, cores)
    fitted = fit(shards, measured, cores)
    assert predict(fitted, shards, cores) == pytest.approx(measured, rel=0.05)
