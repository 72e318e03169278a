"""ModalityCoxnet's alpha selection: 5 inner folds by default, and the one-standard-error rule picks the largest
alpha whose mean inner C is within one standard error of the best (a sparser model that still finds the signal)."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import cindex, make_toy, split

from omics_risk.models.baselines import BASELINE_DEFAULTS, make_baselines
from omics_risk.models.coxnet import ModalityCoxnet


@pytest.fixture(scope="module")
def toy() -> tuple:
    return split(make_toy(400, seed=31, p=60)[0], 280)


def test_one_se_rule_picks_the_largest_alpha_within_one_standard_error(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    best = ModalityCoxnet("a", n_alphas=20).fit(train)
    sparse = ModalityCoxnet("a", n_alphas=20, one_se=True).fit(train)
    path = best.cv_cindex_path_
    assert best.cv_cindex_ == pytest.approx(path.max()) and best.alpha_ == path.idxmax()
    assert sparse.alpha_ > best.alpha_ and sparse.n_selected_ < best.n_selected_
    assert sparse.cv_cindex_ >= path.max() - 0.05
    # every larger alpha is more than one standard error below the best: the rule took the first one within it
    larger = path[path.index > sparse.alpha_]
    assert (larger < sparse.cv_cindex_).all()
    has = test.present["a"].to_numpy()
    assert cindex(test.subset(np.flatnonzero(has)), sparse.predict_risk(test)[has]) > 0.6


def test_defaults_five_inner_folds_and_a_cheaper_stacker_base() -> None:
    assert ModalityCoxnet("a").cv_folds == 5 and BASELINE_DEFAULTS["coxnet"]["cv_folds"] == 5
    models = make_baselines(["a"], "survival")
    assert models["coxnet_a"].cv_folds == 5 and models["coxnet_a"].one_se is False
    assert models["late_fusion"].base_models["a"].cv_folds == 3
    assert make_baselines(["a"], "survival", {"coxnet": {"one_se": True}})["coxnet_a"].one_se is True


def test_a_fixed_alpha_refits_the_chosen_model_without_a_search(toy) -> None:  # type: ignore[no-untyped-def]
    train, test = toy
    searched = ModalityCoxnet("a", n_alphas=20).fit(train)
    fixed = ModalityCoxnet("a", n_alphas=20, fixed_alpha=searched.alpha_).fit(train)
    assert fixed.alpha_ == pytest.approx(searched.alpha_) and np.isnan(fixed.cv_cindex_)
    # the same penalty on the same patients: the same coefficients (the path is walked down to it either way)
    np.testing.assert_allclose(fixed.coef_.to_numpy(), searched.coef_.to_numpy(), atol=1e-3)
    np.testing.assert_allclose(fixed.predict_risk(test), searched.predict_risk(test), atol=1e-2)
    stronger = ModalityCoxnet("a", fixed_alpha=10 * searched.alpha_).fit(train)
    assert stronger.n_selected_ < searched.n_selected_
