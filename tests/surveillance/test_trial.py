"""The non-inferiority sample size: the closed form against a hand computation, and the simulation reproducing it
when it is given the closed form's assumptions (a fixed number of recurrences, Bernoulli outcomes)."""

from __future__ import annotations

import math

import pytest

from omics_risk.surveillance.trial import (
    ArmModel,
    closed_form_recurrences,
    margin_table,
    simulated_power,
    simulated_size,
)


def test_closed_form_is_blackwelders_formula() -> None:
    # (z_0.975 + z_0.8)^2 (0.8 * 0.2 + 0.8 * 0.2) / 0.1^2 = (1.959964 + 0.841621)^2 * 32 = 251.16 -> 252 per arm
    assert closed_form_recurrences(0.8, 0.8, 0.1) == pytest.approx(251.16, abs=0.01)
    # unequal shares: (1.959964 + 1.281552)^2 (0.75 * 0.25 + 0.7 * 0.3) / (0.75 - 0.7 + 0.05)^2
    #   = 10.50742 * 0.3975 / 0.01 = 417.67 (90% power)
    assert closed_form_recurrences(0.75, 0.70, 0.05, power=0.9) == pytest.approx(417.67, abs=0.01)
    assert math.isinf(closed_form_recurrences(0.6, 0.8, 0.1))  # the truth is beyond the margin


def test_simulation_reproduces_the_closed_form_under_its_assumptions() -> None:
    exp, std = ArmModel(0.8), ArmModel(0.8)
    n = math.ceil(closed_form_recurrences(0.8, 0.8, 0.1))
    # 20,000 trials: Monte-Carlo SE of a power of 0.8 is 0.003
    assert simulated_power(exp, std, n, 0.1, n_sim=20000, seed=1) == pytest.approx(0.80, abs=0.012)
    assert simulated_size(exp, std, 0.1, n_sim=20000, seed=1) == pytest.approx(n, rel=0.04)
    # and alpha: at the margin (p_e - p_s = -M) the test rejects about 2.5% of trials
    assert simulated_power(ArmModel(0.7), std, n, 0.1, n_sim=20000, seed=2) == pytest.approx(0.025, abs=0.006)


def test_patients_per_arm_scale_with_the_recurrence_probability() -> None:
    exp, std = ArmModel(0.8, p_recur=0.4), ArmModel(0.8, p_recur=0.4)
    t = margin_table(exp, std, [0.1, 0.2], n_sim=4000, seed=0)
    assert list(t["recurrences_per_arm_closed_form"]) == [252, 63]
    assert list(t["patients_per_arm_closed_form"]) == [628, 157]  # 251.16 / 0.4, 62.79 / 0.4
    assert t["patients_per_arm_simulated"].iloc[0] == pytest.approx(628, rel=0.08)
