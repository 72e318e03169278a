"""The Hydra config group configs/surveillance/ composes (inside evaluate.yaml) to the same schedules and settings
as the built-in defaults that ``omics-risk surveil`` uses without --config."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from omics_risk.surveillance.schedules import build_schedules, default_schedule_configs
from omics_risk.surveillance.settings import SurveillanceSettings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_config_group_matches_the_built_in_defaults() -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["mode=surveillance"])
    raw = OmegaConf.to_container(cfg.surveillance, resolve=True)
    assert raw["schedules"] == default_schedule_configs()
    assert SurveillanceSettings.from_mapping(raw) == SurveillanceSettings()
    names = [s.name for s in build_schedules(raw["schedules"])]
    assert names[:5] == ["ct_6m", "ct_12m", "escalating", "symptoms_only", "stage_based"]
    assert "risk_adapted_0.05" in names and names[-1] == "ctdna_triggered"


def test_the_table_schedule_can_be_added_from_the_group() -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate",
                      overrides=["+surveillance/schedule@surveillance.schedules.mine=table"])
    (mine,) = build_schedules({"mine": OmegaConf.to_container(cfg.surveillance.schedules.mine)})
    assert mine.name == "mine" and mine.months[:3] == [3, 6, 12]
