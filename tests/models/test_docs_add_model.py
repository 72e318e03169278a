"""docs/architecture.md "Adding a model" stays true: its code runs, its config composes with the real configs and
builds the model the way train.py does (Hydra instantiate plus the ModelContext), and the model gives finite risks,
survival curves and the capabilities it declares on a tiny seeded MultimodalData."""

from __future__ import annotations

import re
import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_baselines import make_toy

from omics_risk.models.base import ModelCapabilities, ModelContext, capabilities_of, fit_kwargs, predict_kwargs

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
MODULE = "omics_risk.models.ridge_cox"  # where the guide puts the example


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## Adding a model")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)


@pytest.fixture()
def example(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The guide's python block(s), run as the module its config names."""
    blocks = _blocks("python")
    assert blocks, "no python block under '## Adding a model'"
    module = types.ModuleType(MODULE)
    monkeypatch.setitem(sys.modules, MODULE, module)
    for code in blocks:
        exec(compile(code, f"{DOC}:Adding a model", "exec"), module.__dict__)
    return module


def _config() -> dict:
    blocks = [yaml.safe_load(b) for b in _blocks("yaml")]
    assert len(blocks) == 1, "one model config in the guide"
    return blocks[0]


def test_the_guides_config_names_the_example_model(example: types.ModuleType) -> None:
    cfg = _config()
    module, _, cls = cfg["estimator"]["_target_"].rpartition(".")
    assert module == MODULE and isinstance(getattr(example, cls), type)
    commands = "\n".join(_blocks("bash"))
    assert f"model={cfg['name']}" in commands and f"optimized_metric={cfg['name']}/cindex" in commands


def test_the_example_fits_and_declares_what_it_predicts(example: types.ModuleType, tmp_path: Path) -> None:
    cfg = _config()
    # The guide's YAML dropped into a copy of the real configs composes like any model config.
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "model" / f"{cfg['name']}.yaml").write_text(yaml.safe_dump(cfg))
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        composed = compose("train", overrides=[f"model={cfg['name']}", f"optimized_metric={cfg['name']}/cindex",
                                               "tracking=none", "model.estimator.modality=a"])
    assert composed.model.name == cfg["name"]

    data, _ = make_toy(120, seed=3, p=8)
    train, test = data.subset(np.arange(90)), data.subset(np.arange(90, 120))
    context = ModelContext(modalities=data.modality_names, clinical_types=None, seed=3, device="cpu",
                           response_label="response", heads=["cox", "binary"])  # what a response task passes
    model = instantiate(composed.model.estimator, **context.as_kwargs())
    assert type(model).__module__ == MODULE and model.name == cfg["name"]

    caps = capabilities_of(model)
    assert caps == ModelCapabilities(survival=True)
    assert fit_kwargs(model, images={}, on_epoch=print) == {} and predict_kwargs(model, images={}) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.fit(train)
        risk = model.predict_risk(test)
        surv = model.predict_survival(test, np.array([100.0, 365.0, 1000.0]))
    assert risk.shape == (len(test),) and np.isfinite(risk).all()
    absent = ~test.present["a"].to_numpy()
    assert absent.any() and np.all(risk[absent] == model.median_risk_)  # lacking the modality: training median
    assert surv.shape == (len(test), 3) and np.isfinite(surv).all()
    assert np.all((surv >= 0) & (surv <= 1)) and np.all(np.diff(surv, axis=1) <= 0)
    with pytest.raises(NotImplementedError):  # no response head declared, none there
        model.predict_response(test)
