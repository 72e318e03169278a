"""The modality format registry: built-in entries, registration, and the preprocessing kind of every demo modality."""

from __future__ import annotations

from pathlib import Path

import pytest

from omics_risk.data import formats
from omics_risk.data.contract import DEFAULT_MODALITY_FORMATS, FORMATS, SHARED_FILE_FORMATS, parse_spec
from omics_risk.data.convert.tcga import MODALITY_FORMATS as TCGA_FORMATS
from omics_risk.data.formats import ModalityFormat, preprocessing_kind, register_format, unregister_format
from omics_risk.data.multimodal import MultimodalData
from omics_risk.data.readers import TABLE_EXTENSIONS, read_table
from omics_risk.data.synthetic import KINDS, generate_cohort

SMALL = {"fragments_per_sample": 500, "ct_shape": (16, 16, 8), "n_metabolites": 20, "progress": False}


def _fused_before_registry(modality: str) -> str:
    """models/fused.py's kind before the registry (by name)."""
    return "clinical" if modality == "clinical" else "metabolomics" if modality == "metabolomics" else "tabular"


def _tabular_before_registry(modality: str) -> str:
    """models/tabular.py's kind before the registry (by name; its ``standard`` is fused's ``tabular``)."""
    if modality == "clinical":
        return "clinical"
    return "metabolomics" if modality.startswith("metabolomics") else "tabular"


@pytest.fixture(scope="module")
def demo_modalities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """modality -> format of every synthetic generator's cohort.yaml and of the TCGA converter."""
    base = tmp_path_factory.mktemp("kinds")
    out: dict[str, str] = dict(TCGA_FORMATS)
    for kind in KINDS:
        root = generate_cohort(kind, 10, 3, base / kind, workers=1, **SMALL)
        spec, problems = parse_spec(root / "cohort.yaml")
        assert spec is not None, problems
        for name, ms in spec.modalities.items():
            assert out.setdefault(name, ms.format) == ms.format
    return out


def test_every_demo_modality_keeps_its_preprocessing_kind(demo_modalities: dict[str, str]) -> None:
    assert {"ct", "cfdna", "methylation", "ctdna", "metabolomics", "rppa", "mirna", "cnv"} <= set(demo_modalities)
    data = MultimodalData(patients=None, clinical=None, modalities={}, present=None,  # type: ignore[arg-type]
                          formats=demo_modalities)
    for modality in [*demo_modalities, "clinical"]:
        kind = data.preprocessing_kind(modality)
        assert kind == _fused_before_registry(modality) == _tabular_before_registry(modality), modality
        # without a recorded format (data built by hand) the name's default format answers the same
        assert preprocessing_kind(modality) == kind, modality


def test_built_in_formats_and_contract_snapshots() -> None:
    assert FORMATS == ("image", "fragments", "bismark_cov", "variant_table", "metabolomics_matrix", "table",
                       "cn_segments")
    assert DEFAULT_MODALITY_FORMATS == {"ct": "image", "cfdna": "fragments", "methylation": "bismark_cov",
                                        "ctdna": "variant_table", "metabolomics": "metabolomics_matrix",
                                        "cnv": "cn_segments"}
    assert {"variant_table", "metabolomics_matrix", "table", "cn_segments"} == SHARED_FILE_FORMATS
    config = formats.default_extract_config()
    assert list(config) == list(FORMATS)
    assert config["table"] == [{"_target_": "omics_risk.features.tables.TableExtractor"}]
    config["table"][0]["log2"] = True  # a copy: editing it leaves the registry alone
    assert formats.default_extract_config()["table"] == [{"_target_": "omics_risk.features.tables.TableExtractor"}]


def test_register_lookup_and_unregister(tmp_path: Path) -> None:
    toy = ModalityFormat("toy_table", TABLE_EXTENSIONS, read_table, shared_file=True, default_modalities=("toy",),
                         extractors=({"_target_": "omics_risk.features.tables.TableExtractor"},))
    register_format(toy)
    try:
        assert formats.get_format("toy_table") is toy
        assert formats.default_format_of("toy") == "toy_table"
        assert "toy_table" in formats.format_names()
        assert preprocessing_kind("toy") == "tabular"
        with pytest.raises(ValueError, match="already registered"):
            register_format(toy)
        with pytest.raises(ValueError, match="already belongs"):
            register_format(ModalityFormat("other", (".csv",), default_modalities=("toy",)))
    finally:
        unregister_format("toy_table")
    assert formats.get_format("toy_table") is None
    with pytest.raises(ValueError, match="preprocessing"):
        register_format(ModalityFormat("bad", (".csv",), preprocessing="scaled"))
    assert formats.get_format("bad") is None
