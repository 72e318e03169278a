"""The model/screening config group composes, and what it selects reaches the fused model and the baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from omics_risk.features.screening import FeatureScreen, make_screener
from omics_risk.models.baselines import make_baselines

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GROUP = sorted(p.stem for p in (CONFIGS / "model" / "screening").glob("*.yaml"))


def cfg_for(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=list(overrides))


def test_group_lists_the_documented_choices() -> None:
    assert GROUP == ["consensus_clusters", "cox", "none", "random_forest", "trial_metabolomics", "wilcoxon"]
    docs = (CONFIGS.parent / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in docs for name in GROUP)


def test_default_is_the_unchanged_fused_screen() -> None:
    cfg = cfg_for()
    assert cfg.model.screening.name == "none" and cfg.model.screening.spec is None
    assert "preprocessing" not in cfg.model.estimator and int(cfg.model.estimator.k) == 16
    assert "preprocessing" not in (OmegaConf.to_container(cfg.baselines.settings) or {})


@pytest.mark.parametrize("name", [g for g in GROUP if g != "none"])
@pytest.mark.parametrize("model", ["fused", "fused_concat", "fused_ct"])
def test_each_choice_composes_and_instantiates(name: str, model: str) -> None:
    cfg = cfg_for(f"model={model}", f"model/screening={name}", "seed=3")
    spec = OmegaConf.to_container(cfg.model.screening.spec, resolve=True)
    assert isinstance(make_screener(spec), FeatureScreen)
    fused = instantiate(cfg.model.estimator, modalities=["metabolomics"], seed=3, device="cpu")
    assert fused.preprocessing == {"metabolomics": {"screening": spec}}  # plain values, ready for skops
    settings = OmegaConf.to_container(cfg.baselines.settings, resolve=True)
    baselines = make_baselines(["metabolomics"], "survival", settings)
    assert baselines["coxnet_metabolomics"].preprocessing == {"kind": "auto", "screening": spec}


def test_trial_experiment_selects_the_trial_screen() -> None:
    cfg = cfg_for("experiment=trial_metabolomics", "seed=5")
    assert cfg.model.name == "fused" and cfg.task.name == "rfs" and cfg.model.screening.name == "trial_metabolomics"
    spec = OmegaConf.to_container(cfg.model.screening.spec, resolve=True)
    assert spec["methods"] == ["consensus_clusters", "wilcoxon", "random_forest"]
    assert spec["combine"] == "sequential" and spec["random_state"] == 5  # seeded by the run's seed
    assert cfg_for("model/screening=trial_metabolomics").model.screening.spec.k == 16
