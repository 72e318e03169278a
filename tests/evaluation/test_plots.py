"""Evaluation figures: each returns a pyplot-free Figure whose drawn data match the inputs and lifelines' own
numbers (curves per group, numbers at risk, log-rank p, hazard ratios), with the axes in the documented units."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from omics_risk.evaluation.plots import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    figure_png,
    horizon_label,
    plot_calibration,
    plot_contribution,
    plot_km_by_group,
    plot_model_comparison,
    plot_td_auc,
    plot_top_features,
    save_figure,
)


@pytest.fixture(scope="module")
def surv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 patients, follow-up up to ~5 years (days), risk tertiles labelled low/intermediate/high."""
    rng = np.random.default_rng(0)
    lp = rng.normal(size=300)
    t = rng.exponential(900 * np.exp(-lp))
    c = rng.uniform(200, 1900, 300)
    q = np.quantile(lp, [1 / 3, 2 / 3])
    groups = np.where(lp < q[0], "low", np.where(lp < q[1], "intermediate", "high"))
    return np.minimum(t, c), (t <= c).astype(float), groups


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0 and p.get_width() != 0]


def test_figures_do_not_touch_pyplot(surv):
    before = plt.get_fignums()
    fig = plot_km_by_group(*surv)
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # nothing registered with pyplot: nothing to close, no leak


def test_km_one_curve_per_group_with_at_risk_table(surv):
    time, event, groups = surv
    fig = plot_km_by_group(time, event, groups, title="RFS by tertile", horizon_days=[365.25, 730.5], endpoint="rfs")
    ax, table = fig.axes[0], fig.axes[1]  # the KM axes and lifelines' at-risk twin axes
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == 3
    assert [lbl.split(" ")[0] for lbl in labels] == ["Low", "Intermediate", "High"]  # ordered by risk
    for lbl, g in zip(labels, ["low", "intermediate", "high"], strict=True):
        m = groups == g
        assert f"n={m.sum()}, {int(event[m].sum())} events" in lbl
    # KM step data of each curve equal lifelines' estimate (in months).
    curves = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in labels}
    assert len(curves) == 3
    m = groups == "high"
    km = KaplanMeierFitter().fit(time[m] / DAYS_PER_MONTH, event[m])
    y = curves[labels[2]].get_ydata()
    assert np.isclose(np.min(y), km.survival_function_.iloc[:, 0].min())
    # Numbers at risk: the twin axes' tick labels hold, per tick, the count with time > tick.
    ticks = table.get_xticks()
    assert np.allclose(ticks, ax.get_xticks())
    texts = [t.get_text() for t in table.get_xticklabels()]
    assert texts[0].startswith("At risk")
    t_m = time / DAYS_PER_MONTH
    for tick, text in zip(ticks[1:], texts[1:], strict=True):
        counts = [int(x) for x in text.split()]
        assert counts == [int(((t_m > tick) & (groups == g)).sum()) for g in ["low", "intermediate", "high"]]
    # Log-rank p and HRs against the low group, from lifelines directly.
    p = multivariate_logrank_test(time, groups, event).p_value
    assert legend.get_title().get_text() == ("Log-rank p < 0.001" if p < 0.001 else f"Log-rank p = {p:.3f}")
    X = pd.DataFrame({"inter": (groups == "intermediate").astype(float), "high": (groups == "high").astype(float),
                      "T": time, "E": event})
    hr = CoxPHFitter().fit(X, "T", "E").summary.loc["high"]
    assert f"HR {hr['exp(coef)']:.2f} ({hr['exp(coef) lower 95%']:.2f}–{hr['exp(coef) upper 95%']:.2f})" in labels[2]
    assert "reference" in labels[0]
    # Axis units: months, ticks every 12 months for 5 years of follow-up; horizon markers at 12 and 24 months.
    assert "months" in ax.get_xlabel() and ax.get_ylabel() == "Recurrence-free probability"
    assert np.allclose(np.diff(ticks), 12)
    vlines = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert sorted(round(ln.get_xdata()[0], 6) for ln in vlines) == [12.0, 24.0]
    assert {t.get_text() for t in ax.texts} == {"1 year", "2 years"}
    assert any(t.get_text() == "RFS by tertile" for t in fig.texts)


def test_km_years_two_groups_and_errors(surv):
    time, event, groups = surv
    two = np.where(groups == "low", "low", "high")
    fig = plot_km_by_group(time, event, two, time_unit="years")
    ax = fig.axes[0]
    assert "years" in ax.get_xlabel() and ax.get_ylabel() == "Event-free probability"
    assert ax.get_xlim()[1] == pytest.approx(time.max() / DAYS_PER_YEAR * 1.02)
    assert len(fig.legends[0].get_texts()) == 2
    with pytest.raises(ValueError, match="differ in length"):
        plot_km_by_group(time, event, two[:-1])
    with pytest.raises(ValueError, match="time_unit"):
        plot_km_by_group(time, event, two, time_unit="weeks")


def _calibration_tables() -> dict[float, pd.DataFrame]:
    out = {}
    for h, shift in [(365.25, 0.0), (1095.75, 0.2)]:
        pred = np.array([0.1, 0.2, 0.3, 0.4, 0.5]) + shift
        obs = pred + np.array([0.02, -0.03, 0.01, 0.05, -0.02])
        out[h] = pd.DataFrame({"group": range(5), "n": 40, "predicted": pred, "observed": obs,
                               "observed_low": obs - 0.08, "observed_high": np.minimum(obs + 0.08, 1.0)})
    return out


def test_calibration_panels_points_and_identity():
    tables = _calibration_tables()
    fig = plot_calibration(tables, title="Calibration")
    axes = fig.axes
    assert len(axes) == 2
    assert [ax.get_title(loc="left") for ax in axes] == ["1 year", "3 years"]
    for ax, tab in zip(axes, tables.values(), strict=True):
        diag = next(ln for ln in ax.get_lines() if ln.get_label() == "Perfect calibration")
        assert np.allclose(diag.get_xdata(), diag.get_ydata())  # the identity line
        pts = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
        assert np.allclose(pts.get_xdata(), tab["predicted"]) and np.allclose(pts.get_ydata(), tab["observed"])
        assert ax.get_xlim() == ax.get_ylim()  # same scale on both axes
        assert ax.get_xlim()[1] >= tab["observed_high"].max()
        assert ax.get_xlabel() == "Predicted event probability"
    assert axes[0].get_ylabel() == "Observed event probability (KM)"
    with pytest.raises(ValueError, match="lacks columns"):
        plot_calibration({365.0: tables[365.25].drop(columns="observed_low")})


def test_td_auc_curve_band_and_chance_line():
    h = np.array([365.25, 182.625, 730.5])  # unsorted on purpose
    auc, lo, hi = np.array([0.70, 0.72, 0.66]), np.array([0.62, 0.63, 0.57]), np.array([0.78, 0.80, 0.75])
    fig = plot_td_auc(h, auc, lo, hi, mean_auc=0.69)
    ax = fig.axes[0]
    curve = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
    assert np.allclose(curve.get_xdata(), [6, 12, 24])  # months, sorted
    assert np.allclose(curve.get_ydata(), [0.72, 0.70, 0.66])
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # CI band
    assert any(np.allclose(ln.get_ydata(), 0.5) for ln in ax.get_lines())
    assert ax.get_xlabel() == "Horizon (months)"
    assert ax.get_ylim()[0] <= lo.min() and ax.get_ylim()[1] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        plot_td_auc(h, auc[:2])


def test_contribution_bars_sorted_with_cis():
    frame = pd.DataFrame({"modality": ["clinical", "cfdna", "noise"], "delta_cindex": [0.03, 0.12, -0.002],
                          "low": [0.01, 0.08, -0.01], "high": [0.05, 0.16, 0.006], "n_present": [150, 140, 120]})
    fig = plot_contribution(frame)
    ax = fig.axes[0]
    bars = sorted(_bars(ax), key=lambda b: b.get_y())
    assert [round(b.get_width(), 4) for b in bars] == [-0.002, 0.03, 0.12]  # largest drop on top
    assert [t.get_text() for t in ax.get_yticklabels()] == ["noise (n=120)", "clinical (n=150)", "cfdna (n=140)"]
    assert "C-index" in ax.get_xlabel()
    with pytest.raises(ValueError, match="lacks columns"):
        plot_contribution(frame.drop(columns="low"))


def test_top_features_frame_and_signed_series():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"feature": [f"m{i % 2}/f{i}" for i in range(30)],
                          "modality": [f"m{i % 2}" for i in range(30)],
                          "importance": rng.gamma(1, 0.01, 30), "std": 0.001})
    fig = plot_top_features(frame, n=10)
    ax = fig.axes[0]
    bars = sorted(_bars(ax), key=lambda b: b.get_y())
    assert len(bars) == 10
    widths = [b.get_width() for b in bars]
    assert widths == sorted(widths) and np.isclose(widths[-1], frame["importance"].max())
    top = frame.loc[frame["importance"].idxmax(), "feature"]
    assert ax.get_yticklabels()[-1].get_text() == top
    assert "permuted" in ax.get_xlabel()

    coef = pd.Series([0.5, -1.2, 0.0, 2.0], index=["a", "b", "c", "d"])
    fig = plot_top_features(coef, n=3)
    ax = fig.axes[0]
    bars = sorted(_bars(ax), key=lambda b: b.get_y())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "d"]  # by |coef|, largest on top
    assert bars[1].get_facecolor() != bars[2].get_facecolor()  # sign-coloured
    assert "Coefficient" in ax.get_xlabel()


def test_model_comparison_forest_with_reference_line():
    table = pd.DataFrame({"model": ["fused", "clinical_cox", "coxnet_cfdna"], "cindex": [0.74, 0.66, 0.70],
                          "cindex_ci_low": [0.70, 0.61, 0.65], "cindex_ci_high": [0.78, 0.71, 0.75],
                          "p_value": [0.0004, np.nan, 0.04]})
    fig = plot_model_comparison(table, reference="clinical_cox", title="Comparison")
    ax = fig.axes[0]
    ref_lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(ref_lines) == 1 and np.allclose(ref_lines[0].get_xdata(), 0.66)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["clinical_cox  (reference)", "coxnet_cfdna", "fused"]  # sorted by C, best on top
    texts = {t.get_text() for t in ax.texts}
    assert {"0.740 (0.700–0.780)", "< 0.001", "0.040", "C (95% CI)", "p vs ref."} <= texts
    assert "C-index" in ax.get_xlabel()
    # Estimate.as_dict naming and the index as model names work too.
    alt = table.set_index("model").rename(columns={"cindex": "harrell_c", "cindex_ci_low": "harrell_c_ci_low",
                                                   "cindex_ci_high": "harrell_c_ci_high"})
    assert len(plot_model_comparison(alt).axes[0].get_yticklabels()) == 3
    with pytest.raises(ValueError, match="reference model"):
        plot_model_comparison(table, reference="nope")


def test_png_helpers(tmp_path, surv):
    fig = plot_km_by_group(*surv)
    png = figure_png(fig)
    assert png.startswith(b"\x89PNG")
    path = save_figure(fig, tmp_path / "sub" / "km.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert horizon_label(365.25) == "1 year" and horizon_label(730.5) == "2 years"
    assert horizon_label(18 * DAYS_PER_MONTH) == "18 months" and horizon_label(100) == "100 days"


def test_km_quartile_labels_ordered_and_close_horizons_staggered(surv):
    """RiskGroups' 4-group labels (low, intermediate_1, intermediate_2, high) keep risk order, low is the HR
    reference; horizon labels too close to share a row are lifted so they do not overlap."""
    time, event, _ = surv
    rng = np.random.default_rng(2)
    groups = rng.choice(["high", "intermediate_2", "low", "intermediate_1"], len(time))
    fig = plot_km_by_group(time, event, groups, horizon_days=[365.25, 456.6], max_time_days=1500)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [lbl.split(" (")[0] for lbl in labels] == ["Low", "Intermediate 1", "Intermediate 2", "High"]
    assert "reference" in labels[0] and all("HR " in lbl for lbl in labels[1:])
    ax = fig.axes[0]
    assert ax.get_xlim()[1] == pytest.approx(1500 / DAYS_PER_MONTH * 1.02)
    offsets = sorted(t.xyann[1] for t in ax.texts)
    assert offsets[1] > offsets[0]
