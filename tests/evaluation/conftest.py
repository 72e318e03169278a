"""Simulated survival data with known truth for the evaluation tests.

Weibull proportional hazards: S(t | x) = exp(-(t / scale) ** shape * exp(lp)), lp = x @ beta, with independent
uniform censoring; times in days. The true survival curves let tests check calibration metrics against the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass(frozen=True)
class WeibullPH:
    x: np.ndarray
    lp: np.ndarray
    time: np.ndarray
    event: np.ndarray
    scale: float
    shape: float

    def survival(self, t: np.ndarray | float, lp: np.ndarray | None = None) -> np.ndarray:
        """True S(t | lp): t scalar or per patient -> (n,); t a grid with lp[:, None] -> (n, len(grid))."""
        lp = self.lp if lp is None else lp
        return np.exp(-((np.asarray(t, float) / self.scale) ** self.shape) * np.exp(lp))


def simulate_weibull_ph(n: int, seed: int, *, beta: tuple[float, ...] = (1.0,), shape: float = 1.5,
                        scale: float = 1000.0, censor_max: float = 2500.0) -> WeibullPH:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(beta)))
    lp = x @ np.asarray(beta)
    t = scale * (-np.log(rng.uniform(size=n)) / np.exp(lp)) ** (1 / shape)
    c = rng.uniform(0, censor_max, size=n)
    return WeibullPH(x, lp, np.minimum(t, c), t <= c, scale, shape)


@pytest.fixture(scope="session")
def weibull_ph() -> Callable[..., WeibullPH]:
    """``weibull_ph(n, seed, beta=(1.0,), shape=1.5, scale=1000, censor_max=2500)`` -> WeibullPH."""
    return simulate_weibull_ph
