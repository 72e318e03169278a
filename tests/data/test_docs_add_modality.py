"""docs/architecture.md "Adding a modality" stays true: its new file and registry entry, run as written, give a
modality that validate checks, extract extracts and load_multimodal hands to models with its preprocessing kind."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from omics_risk.data.formats import get_format, unregister_format
from omics_risk.data.multimodal import load_multimodal
from omics_risk.data.validate import validate_cohort
from omics_risk.features.extract import default_extract_config, extract_cohort

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def _section_blocks() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Adding a modality\n", 1)[1].split("\n## ", 1)[0]
    return FENCE.findall(section)


@pytest.fixture
def toy_modality(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """The section's new file written to a folder on sys.path, and its registry entry executed in-process."""
    blocks = _section_blocks()
    python = [code for lang, code in blocks if lang == "python"]
    files = [code for code in python if code.startswith("# rnaseq_counts.py")]
    entries = [code for code in python if code not in files]
    assert len(files) == 1 and len(entries) == 1, "expected one new file and one registry entry in the section"
    (yaml_block,) = [code for lang, code in blocks if lang == "yaml"]
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "rnaseq_counts.py").write_text(files[0], encoding="utf-8")
    monkeypatch.syspath_prepend(str(plugin))
    try:
        exec(compile(entries[0], "docs/architecture.md (registry entry)", "exec"), {})
        yield {"modalities": yaml.safe_load(yaml_block)["modalities"]}
    finally:
        unregister_format("rnaseq_counts")
        sys.modules.pop("rnaseq_counts", None)


def _write_cohort(root: Path, modalities: dict[str, object]) -> Path:
    rng = np.random.default_rng(5)
    patients = [f"P{i:03d}" for i in range(1, 9)]
    root.mkdir()
    (root / "cohort.yaml").write_text(yaml.safe_dump({
        "name": "toy_rnaseq", "time_unit": "days",
        "endpoints": {"os": {"type": "survival", "time": "os_days", "event": "os_event"}},
        "clinical": {"age": "numeric"}, "modalities": modalities,
    }))
    pd.DataFrame({"patient_id": patients, "age": rng.integers(50, 80, len(patients)),
                  "os_days": rng.integers(100, 2000, len(patients)), "os_event": [1, 0] * 4}).to_csv(
        root / "clinical.csv", index=False)
    with_rna = patients[:-1]  # the last patient has no RNA-seq: missing, not an error
    pd.DataFrame({"patient_id": with_rna, "sample_id": [f"{p}-RNA" for p in with_rna], "modality": "rnaseq",
                  "timepoint": "baseline", "day": -7, "path": "rnaseq/counts.csv"}).to_csv(
        root / "samples.csv", index=False)
    (root / "rnaseq").mkdir()
    counts = pd.DataFrame(rng.integers(0, 3000, (len(with_rna), 4)), columns=["EGFR", "KRAS", "TP53", "STK11"])
    counts.insert(0, "sample_id", [f"{p}-RNA" for p in with_rna])
    counts.to_csv(root / "rnaseq" / "counts.csv", index=False)
    return root


def test_the_documented_modality_works_end_to_end(toy_modality: dict[str, object], tmp_path: Path) -> None:
    fmt = get_format("rnaseq_counts")
    assert fmt is not None and fmt.preprocessing == "tabular"
    assert default_extract_config()["rnaseq_counts"] == [{"_target_": "rnaseq_counts.RnaseqCountsExtractor"}]
    root = _write_cohort(tmp_path / "cohort", toy_modality["modalities"])  # type: ignore[arg-type]

    report = validate_cohort(root, workers=1)
    assert report.ok, report.to_text()
    assert report.n_files_opened == 1

    summary = extract_cohort(root, workers=1, progress=False)
    assert summary.modalities["rnaseq"]["ok"] == 7 and summary.modalities["rnaseq"]["failed"] == 0
    table = pd.read_parquet(root / "features" / "rnaseq.parquet")
    assert list(table.columns) == [f"baseline__log2cpm_{g}" for g in ("EGFR", "KRAS", "STK11", "TP53")]
    counts = pd.read_csv(root / "rnaseq" / "counts.csv", index_col="sample_id")
    cpm = counts.loc["P001-RNA"] / counts.loc["P001-RNA"].sum() * 1e6
    np.testing.assert_allclose(table.loc["P001", "baseline__log2cpm_TP53"], np.log2(cpm["TP53"] + 0.5))  # prior 0.5

    data = load_multimodal(root)
    assert data.formats == {"rnaseq": "rnaseq_counts"}
    assert data.modalities["rnaseq"].shape == (8, 4)
    assert data.present["rnaseq"].sum() == 7
    assert data.preprocessing_kind("rnaseq") == "tabular"
    assert data.preprocessing_kind("clinical") == "clinical"


def test_validate_names_a_broken_file_of_the_documented_modality(toy_modality: dict[str, object],
                                                                  tmp_path: Path) -> None:
    root = _write_cohort(tmp_path / "cohort", toy_modality["modalities"])  # type: ignore[arg-type]
    path = root / "rnaseq" / "counts.csv"
    counts = pd.read_csv(path, dtype=str)
    counts.loc[2, "KRAS"] = "-3"
    counts.to_csv(path, index=False)
    report = validate_cohort(root, workers=1)
    assert not report.ok
    (error,) = report.errors
    assert (error.file, error.line, error.column) == ("rnaseq/counts.csv", 4, "KRAS")
    assert "read counts are whole numbers >= 0, got '-3'" in error.message


def test_the_toy_modality_is_gone_after_the_test() -> None:
    assert get_format("rnaseq_counts") is None
    assert "rnaseq_counts" not in default_extract_config()
