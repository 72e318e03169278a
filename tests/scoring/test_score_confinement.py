"""``omics-risk score`` and path confinement: a samples.csv row leading outside the cohort is set aside for its
patient with the reason (every patient still gets a row), and the repaired cohort view keeps the source's data roots.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from scoring_cohorts import write_table_cohort

from omics_risk.data.contract import CohortError, PathOutsideCohortError, load_cohort
from omics_risk.workflows.scoring import prepare_cohort, score_cohort


def _edit_csv(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


@pytest.fixture
def site(tmp_path: Path) -> SimpleNamespace:
    """A table cohort whose miRNA table lives in a shared archive (data_roots: [../archive]), with two rows leading
    out of the cohort: T001's RPPA row climbs out with '..', T002's goes through a link to a copy elsewhere."""
    root = write_table_cohort(tmp_path / "site" / "cohort", n=8, seed=5)
    archive = tmp_path / "site" / "archive"
    archive.mkdir()
    shutil.move(root / "mirna" / "mirna.csv", archive / "mirna.csv")
    (root / "cohort.yaml").write_text((root / "cohort.yaml").read_text() + "data_roots: [../archive]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(root / "rppa" / "rppa.csv", elsewhere / "rppa.csv")
    (root / "rppa" / "linked.csv").symlink_to(elsewhere / "rppa.csv")

    def samples(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df["modality"] == "mirna", "path"] = "../archive/mirna.csv"
        df.loc[(df["patient_id"] == "T001") & (df["modality"] == "rppa"), "path"] = "../../../../etc/passwd"
        df.loc[(df["patient_id"] == "T002") & (df["modality"] == "rppa"), "path"] = "rppa/linked.csv"
        return df

    _edit_csv(root / "samples.csv", samples)
    rows = pd.read_csv(root / "samples.csv", dtype=str)
    line = {pid: int(rows.index[(rows["patient_id"] == pid) & (rows["modality"] == "rppa")][0]) + 2
            for pid in ("T001", "T002")}
    return SimpleNamespace(root=root, archive=archive, elsewhere=elsewhere, line=line)


def test_prepare_cohort_sets_the_rows_aside_and_the_view_keeps_the_data_roots(site: SimpleNamespace,
                                                                              tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="leads outside the cohort folder"):
        load_cohort(site.root)
    prep = prepare_cohort(site.root, tmp_path / "view")
    assert prep.root == tmp_path / "view" and not prep.failed
    ((mod, note),) = prep.notes["T001"]
    assert mod == "rppa"
    assert note.startswith(f"samples.csv line {site.line['T001']}: path '../../../../etc/passwd' leads outside the "
                           "cohort folder and its data_roots, to ")
    assert note.endswith("or add the folder that holds it to data_roots; sample set aside")
    assert f"path 'rppa/linked.csv' is a symbolic link (or lies under one) that leads outside the cohort folder, " \
           f"to {site.elsewhere.resolve() / 'rppa.csv'}" in prep.notes["T002"][0][1]
    spec = yaml.safe_load((tmp_path / "view" / "cohort.yaml").read_text())
    assert spec["data_roots"] == [str(site.root.resolve()), str(site.archive.resolve())]
    cohort = prep.cohort
    assert set(cohort.samples.loc[cohort.samples["modality"] == "mirna", "path"]) == {
        str(site.root.resolve() / "../archive/mirna.csv")}
    assert cohort.path(str(site.root.resolve() / "../archive/mirna.csv")).resolve() == site.archive / "mirna.csv"
    assert cohort.path("rppa/rppa.csv").resolve() == (site.root / "rppa" / "rppa.csv").resolve()
    with pytest.raises(PathOutsideCohortError):
        cohort.path("rppa/linked.csv")  # the view links to the source, but the source's escaping link stays refused


def test_score_gives_every_patient_a_row_with_the_reason(table_model: SimpleNamespace, site: SimpleNamespace,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score_cohort(table_model.batch, site.root, out, progress=False, workers=1)
    df = pd.read_csv(out, dtype={"patient_id": str}, keep_default_na=False).set_index("patient_id")
    assert list(df.index) == [f"T{i:03d}" for i in range(8)]
    for pid, why in (("T001", "path '../../../../etc/passwd' leads outside the cohort folder"),
                     ("T002", "path 'rppa/linked.csv' is a symbolic link")):
        assert df.at[pid, "status"] == "partial"
        assert f"samples.csv line {site.line[pid]}: {why}" in df.at[pid, "reason"]
        assert "rppa" in df.at[pid, "modalities_missing"].split(",")
    mirna = pd.read_csv(site.archive / "mirna.csv")["sample_id"].str[:4]
    with_mirna = set(pd.read_csv(site.root / "samples.csv").query("modality == 'mirna'")["patient_id"])
    for pid in sorted(with_mirna & set(mirna)):  # read from the data root, through the repaired view
        assert "mirna" in df.at[pid, "modalities_used"].split(","), df.loc[pid].to_dict()


def test_prepare_cohort_fails_a_patient_whose_id_holds_a_control_character(tmp_path: Path) -> None:
    """Not a duplicate: the patient cannot be matched to its samples, so it gets a failed row with the reason."""
    root = write_table_cohort(tmp_path / "c", n=6, seed=2)
    p = root / "clinical.csv"
    p.write_text(p.read_text().replace("\nT003,", "\nT0\x0003,"))
    first = int(pd.read_csv(root / "samples.csv", dtype=str).query("patient_id == 'T003'").index[0]) + 2
    prep = prepare_cohort(root, tmp_path / "view")
    assert prep.failed == {
        "T0\x0003": "clinical.csv line 5 [patient_id]: patient_id 'T0\\x0003' contains a control character (\\x00); "
                    "identifiers must be printable text: remove it (often a stray tab, line break or NUL from an "
                    "export)",
        "T003": f"not in clinical.csv (only in samples.csv, line {first}): no clinical data to score this patient with",
    }
    assert "T003" not in set(prep.cohort.clinical["patient_id"])
    assert prep.order[:5] == ["T000", "T001", "T002", "T0\x0003", "T004"]
