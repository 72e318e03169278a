"""What counts as the user's mistake (one line) and what stays a bug (traceback), and which run folders go."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from omics_risk.cli_errors import UserError, _remove_run_folder, check_data_roots, describe_user_error
from omics_risk.data.problems import CohortError, Problem
from omics_risk.evaluation.horizons import HorizonError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _composition_error(*overrides: str) -> Exception:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"), pytest.raises(Exception) as info:
        compose("train", overrides=list(overrides))
    return info.value


def test_composition_errors_name_the_key_and_the_closest_one() -> None:
    assert describe_user_error(_composition_error("modle=fused"), CONFIGS) == (
        "config", "unknown config group 'modle'; did you mean 'model'? (model=fused)")
    assert describe_user_error(_composition_error("training.cv.fodls=3"), CONFIGS) == (
        "config", "unknown config key 'training.cv.fodls'; did you mean 'training.cv.folds'? (training.cv.folds=3)")
    kind, text = describe_user_error(_composition_error("task=rsf"), CONFIGS)
    assert kind == "config" and text.startswith("config group 'task' has no option 'rsf'; did you mean 'rfs'?")
    # nothing close: the keys that exist there, and how to add a new one on purpose
    _, text = describe_user_error(_composition_error("training.cv.zzz=1"), CONFIGS)
    assert "unknown config key 'training.cv.zzz'" in text and "folds" in text and "+training.cv.zzz=1" in text
    kind, text = describe_user_error(_composition_error("seed=[1"), CONFIGS)
    assert kind == "config" and "cannot read the override 'seed=[1'" in text


def test_our_own_value_errors_are_user_errors_and_library_ones_are_bugs() -> None:
    assert describe_user_error(HorizonError("horizon 5000 days is not inside the follow-up")) == (
        "horizon", "horizon 5000 days is not inside the follow-up")
    single = CohortError([Problem("error", "/c", "not a directory: a cohort is a folder with cohort.yaml")])
    assert describe_user_error(single) == (
        "data", "/c: not a directory: a cohort is a folder with cohort.yaml (omics-risk validate COHORT shows the "
                "full report)")
    with pytest.raises(ValueError) as ours:
        raise ValueError("task.endpoint 'x' must be a survival endpoint")  # raised here: a test module, not ours
    assert describe_user_error(ours.value) is None
    with pytest.raises(ValueError) as library:
        json.loads("{")
    assert describe_user_error(library.value) is None  # a library's ValueError keeps its traceback
    assert describe_user_error(KeyError("fused")) is None
    assert describe_user_error(FileNotFoundError(2, "No such file or directory", "x.csv"))[0] == "file"


def test_a_value_error_raised_in_omics_risk_code_is_a_user_error() -> None:
    from omics_risk.data.timing import PredictionTime  # the check under test lives in a package module

    with pytest.raises(ValueError) as info:
        PredictionTime.from_config({"at": "nonsense"})
    found = describe_user_error(info.value)
    assert found is not None and found[1] == str(info.value)


def test_check_data_roots(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cfg = OmegaConf.create({"data": {"root": "???", "validation_root": None}})
    with pytest.raises(UserError, match=r"^data.root is not set: pass data.root=/path/to/cohort"):
        check_data_roots(cfg, "data.root")
    cfg.data.root = str(tmp_path / "dmeo")
    with pytest.raises(UserError, match=f"did you mean data.root={tmp_path / 'demo'}"):
        check_data_roots(cfg, "data.root", "data.validation_root")
    cfg.data.root = str(tmp_path / "file.txt")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_data_roots(cfg, "data.root")
    (tmp_path / "demo" / "cohort.yaml").write_text("name: demo\n")
    cfg.data.root = str(tmp_path)  # a folder, but no cohort: the cohort inside it is named
    with pytest.raises(UserError, match=f"has no cohort.yaml, so it is not a cohort folder; did you mean "
                                        f"data.root={tmp_path / 'demo'}"):
        check_data_roots(cfg, "data.root")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"has no cohort\.yaml.*pass data\.root=DIR, a cohort folder with cohort\.yaml"):
        check_data_roots(OmegaConf.create({"data": {"root": str(tmp_path / "empty")}}), "data.root")
    cfg.data.root = str(tmp_path / "demo")
    check_data_roots(cfg, "data.root", "data.validation_root")  # a cohort, and an unset optional root: fine


def test_only_a_run_folder_holding_nothing_but_its_log_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "project"
    failed = root / "outputs" / "rfs" / "2026-01-01_00-00-00"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (failed / "plots").mkdir()  # made, left empty
    (failed / "train.log").write_text("")
    handler = logging.FileHandler(failed / "train.log")
    logging.root.addHandler(handler)
    try:
        _remove_run_folder(failed, "train.log", root)
    finally:
        logging.root.removeHandler(handler)
    assert not (root / "outputs").exists() and root.is_dir()  # the empty parents made for it go too, not the root
    assert handler.stream is None  # closed before the file went

    kept = root / "outputs" / "rfs" / "2026-01-01_00-00-01"
    kept.mkdir(parents=True)
    (kept / "train.log").write_text("")
    (kept / "summary.json").write_text("{}")
    _remove_run_folder(kept, "train.log", root)
    assert (kept / "summary.json").is_file()
