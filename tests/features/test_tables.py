"""Precomputed tables: passed through exactly, with log2(x+1) and prefixes on request, clear errors on non-numeric
columns, failures for samples the table lacks; and the real TCGA LUSC RPPA and miRNA tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.data.readers import DataFileError, read_table
from omics_risk.features.tables import TableExtractor, check_numeric

SHARED = Path(os.environ.get("OMICS_RISK_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
TCGA_SRC = SHARED / "data" / "tcga_lusc"


@pytest.fixture(name="tiny")
def _tiny(make_valid_cohort, tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_cohort(make_valid_cohort(tmp_path / "c", with_bam=False))


def test_pass_through_is_exact(tiny) -> None:  # type: ignore[no-untyped-def]
    samples = tiny.samples_of("rppa")
    res = TableExtractor().extract_shared(tiny, samples)
    expected = read_table(tiny.path("rppa/rppa.csv"))
    assert not res.failures
    pd.testing.assert_frame_equal(
        res.features.sort_index(), expected.loc[sorted(samples["sample_id"])], check_names=False
    )
    assert res.features.isna().sum().sum() == 1  # the one empty cell stays missing


def test_prefix_columns_and_log2(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    samples = tiny.samples_of("rppa")
    res = TableExtractor(prefix="rppa_", columns=["MTOR_pS2448", "AKT_pS473"]).extract_shared(tiny, samples)
    assert list(res.features.columns) == ["rppa_MTOR_pS2448", "rppa_AKT_pS473"]
    # log2(x + 1) on counts; negative values (already log-scaled data) are refused, naming the column.
    counts = pd.DataFrame(
        {"sample_id": samples["sample_id"].to_numpy(), "mir_a": [0, 1, 3, 1023], "mir_b": [7, np.nan, 15, 0]}
    )
    counts.to_csv(tiny.path("rppa/rppa.csv"), index=False)
    res = TableExtractor(log2=True, prefix="mir_").extract_shared(tiny, samples)
    assert res.features["mir_mir_a"].tolist() == [0.0, 1.0, 2.0, 10.0]
    assert res.features["mir_mir_b"].iloc[0] == 3.0 and np.isnan(res.features["mir_mir_b"].iloc[1])
    with pytest.raises(DataFileError, match="'AKT_pS473'") as exc:
        TableExtractor(log2=True).transform_table(pd.DataFrame({"AKT_pS473": [-0.5, 1.0]}), "rppa.csv")
    assert exc.value.column == "AKT_pS473"
    with pytest.raises(DataFileError, match="not in the table"):
        TableExtractor(columns=["absent"]).extract_shared(tiny, samples)


def test_missing_and_empty_samples_fail(tiny) -> None:  # type: ignore[no-untyped-def]
    samples = tiny.samples_of("rppa").copy()
    extra = samples.iloc[[0]].assign(sample_id="P04-rppa-preop", patient_id="P04")
    table = read_table(tiny.path("rppa/rppa.csv")).reset_index()
    table.loc[len(table)] = ["P06-rppa-preop", np.nan, np.nan, np.nan]
    table.to_csv(tiny.path("rppa/rppa.csv"), index=False)
    empty = samples.iloc[[0]].assign(sample_id="P06-rppa-preop", patient_id="P06")
    res = TableExtractor().extract_shared(tiny, pd.concat([samples, extra, empty]))
    assert res.failures == {
        "P04-rppa-preop": "no row for this sample in rppa/rppa.csv",
        "P06-rppa-preop": "every feature of this sample is empty in rppa/rppa.csv",
    }
    assert len(res.features) == len(samples)


def test_one_broken_sample_fails_only_itself(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def break_p05(root: Path) -> None:  # rows: P01, P02, P03, P05
        table = pd.read_csv(root / "rppa/rppa.csv", dtype=str, keep_default_na=False)
        table.loc[3, "AKT_pS473"] = "high"
        table.to_csv(root / "rppa/rppa.csv", index=False)

    clean, broken, _ = clean_and_broken(make_valid_cohort, tmp_path, "rppa", break_p05)
    assert_only_sample_failed(clean, broken, "rppa", "P05-rppa-preop",
                              ("table: rppa/rppa.csv:5 [AKT_pS473]: AKT_pS473 must be a number, got 'high'",))


def test_a_negative_value_under_log2_fails_only_its_sample(tiny) -> None:  # type: ignore[no-untyped-def]
    samples = tiny.samples_of("rppa")
    counts = pd.DataFrame({"sample_id": samples["sample_id"].to_numpy(), "mir_a": [0, -1, 3, 1023],
                           "mir_b": [7, 1, 15, 0]})
    counts.to_csv(tiny.path("rppa/rppa.csv"), index=False)
    res = TableExtractor(log2=True).extract_shared(tiny, samples)
    assert res.failures == {"P02-rppa-preop": "rppa/rppa.csv [mir_a]: -1 for this sample, but log2(x + 1) needs "
                                              "values >= 0 (if the table is already log-scaled, set log2: false)"}
    assert res.features.to_dict("index") == {"P01-rppa-preop": {"mir_a": 0.0, "mir_b": 3.0},
                                             "P03-rppa-preop": {"mir_a": 2.0, "mir_b": 4.0},
                                             "P05-rppa-preop": {"mir_a": 10.0, "mir_b": 0.0}}


def test_non_numeric_columns_are_named(tiny) -> None:  # type: ignore[no-untyped-def]
    # A Parquet table with a text column: the reader or the check names it.
    samples = tiny.samples_of("rppa")
    df = pd.DataFrame(
        {"sample_id": samples["sample_id"].to_numpy(), "AKT": [1.0, 2.0, 3.0, 4.0], "batch": ["a", "b", "a", "b"]}
    )
    df.to_parquet(tiny.path("rppa/rppa.parquet"))
    samples = samples.assign(path="rppa/rppa.parquet")
    with pytest.raises(DataFileError, match="batch"):
        TableExtractor().extract_shared(tiny, samples)
    with pytest.raises(DataFileError, match="column 'batch' is not numeric") as exc:
        check_numeric(df.set_index("sample_id"), "t.parquet")
    assert exc.value.column == "batch"
    with pytest.raises(DataFileError, match="infinite"):
        check_numeric(pd.DataFrame({"x": [1.0, np.inf]}), "t.csv")


# --------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module", name="tcga")
def _tcga(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not TCGA_SRC.is_dir():
        pytest.skip(f"TCGA LUSC source data not found at {TCGA_SRC} (set OMICS_RISK_SHARED)")
    from omics_risk.data.convert import convert_tcga_lusc

    return load_cohort(convert_tcga_lusc(TCGA_SRC, tmp_path_factory.mktemp("tcga") / "tcga", verbose=False))


@pytest.mark.slow
def test_tcga_rppa_and_mirna(tcga) -> None:  # type: ignore[no-untyped-def]
    rppa = TableExtractor(prefix="rppa_").extract_shared(tcga, tcga.samples_of("rppa"))
    assert rppa.features.shape == (328, 223) and not rppa.failures
    assert all(c.startswith("rppa_") for c in rppa.features.columns)
    raw = read_table(tcga.path("omics/rppa.csv"))
    np.testing.assert_array_equal(rppa.features.loc[raw.index].to_numpy(), raw.to_numpy())
    # miRNA is raw reads per million: log2(RPM + 1) puts the abundant let-7 family around 2^12 RPM.
    mirna = TableExtractor(log2=True, prefix="mirna_").extract_shared(tcga, tcga.samples_of("mirna"))
    assert mirna.features.shape == (136, 1046) and not mirna.failures
    assert mirna.features.min().min() >= 0
    assert 10 < mirna.features["mirna_hsa-let-7a-1"].median() < 16
