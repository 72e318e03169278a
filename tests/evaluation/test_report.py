"""HTML report and model card: the report is well-formed, self-contained HTML (no script, no external resource,
every figure an embedded PNG), shows every metric value and escapes text; the model card has every required
section, the numbers it was given and escaped Markdown."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from omics_risk.evaluation.metrics import Estimate
from omics_risk.evaluation.modelcard import REQUIRED_SECTIONS, model_card, write_model_card
from omics_risk.evaluation.plots import plot_td_auc, save_figure
from omics_risk.evaluation.report import estimates_table, write_html_report

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
METRICS = {
    "harrell_c": Estimate(0.7123, 0.6541, 0.7702, 1000),
    "uno_c": Estimate(0.6988, 0.6367, 0.7561, 998),
    "auc_365d": Estimate(0.7311, 0.6612, 0.8027, 1000),
    "ibs": 0.1714,
}


class _Collector(HTMLParser):
    """Checks nesting and collects tags, attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Collector:
    p = _Collector()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    return p


def _figure() -> Figure:
    return plot_td_auc([365.25, 730.5], [0.7, 0.68], [0.62, 0.6], [0.78, 0.76])


def test_html_report_is_valid_self_contained_and_complete(tmp_path):
    png = save_figure(_figure(), tmp_path / "auc.png")
    path = write_html_report(
        tmp_path / "out" / "report.html",
        title="Validation of omics-risk-rfs@champion <b>v3</b>",
        metrics_table=METRICS,
        figures={"Time-dependent AUC": _figure(), "From file": png},
        captions={"From file": "A PNG read from disk & embedded."},
        sections={"Notes": "Cut-offs fixed on the training cohort.\n\nInjected <script>alert(1)</script> text."},
        meta={"run_id": "abc123", "model_uri": "models:/omics-risk-rfs@champion", "cohort": "val & co"},
    )
    assert path == tmp_path / "out" / "report.html"
    p = _parse(path)
    tags = [t for t, _ in p.tags]
    text = " ".join(p.text)
    assert tags[0] == "html" and "head" in tags and "body" in tags and "style" in tags
    assert "script" not in tags  # no JavaScript, and the injected one is text
    assert "Injected <script>alert(1)</script> text." in text
    assert "Validation of omics-risk-rfs@champion <b>v3</b>" in text and "b" not in tags
    assert "val & co" in text and "A PNG read from disk & embedded." in text
    # Self-contained: no external resources, links only to anchors in the page.
    for tag, attrs in p.tags:
        assert tag not in ("link", "iframe", "object")
        assert attrs.get("href", "#").startswith("#")
    ids = {a["id"] for _, a in p.tags if "id" in a}
    assert {a["href"][1:] for _, a in p.tags if "href" in a} <= ids
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 2
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
        assert a["alt"]
    # Every metric value and CI bound is shown (3 decimals).
    for name, est in METRICS.items():
        assert name in text
        values = [est.value, est.low, est.high] if isinstance(est, Estimate) else [est]
        for v in values:
            assert f"{v:.3f}" in text
    for section in ("Run metadata", "Metrics", "Figures", "Notes"):
        assert section in text


def test_report_takes_a_comparison_table_and_formats_p_values(tmp_path):
    table = pd.DataFrame({"model": ["fused", "clinical_cox"], "cindex": [0.7412, 0.6621],
                          "cindex_ci_low": [0.7003, 0.6104], "cindex_ci_high": [0.7788, 0.7093],
                          "delta_vs_clinical_cox_p": [0.0004, np.nan], "n": [300, 300]})
    path = write_html_report(tmp_path / "r.html", title="Comparison", metrics_table=table, digits=3)
    p = _parse(path)
    cells = [d.strip() for d in p.text if d.strip()]
    assert {"0.741", "0.700", "0.779", "<0.001", "–", "300", "fused", "clinical_cox"} <= set(cells)
    assert not any(t == "img" for t, _ in p.tags)


def test_report_rejects_non_png_figures(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        write_html_report(tmp_path / "r.html", title="t", metrics_table=METRICS, figures={"bad": bad})
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        write_html_report(tmp_path / "r.html", title="t", metrics_table=METRICS,
                          figures={"gone": tmp_path / "missing.png"})


def test_estimates_table():
    t = estimates_table(METRICS)
    assert list(t["metric"]) == list(METRICS)
    assert t.loc[0, "estimate (95% CI)"] == "0.712 (0.654–0.770)"
    assert t.loc[3, "estimate (95% CI)"] == "0.171" and pd.isna(t.loc[3, "n_boot"])


def _card(**over) -> str:
    kw = dict(
        name="omics-risk-rfs", version=3, alias="champion", task="survival", endpoint="rfs",
        data={"cohort": "demo | nsclc_postop", "n_patients": 300, "n_events": 120,
              "modalities": {"clinical": 300, "cfdna": 0.93, "methylation": {"n": 250}}},
        metrics=METRICS,
        intended_use="Research: rank resected NSCLC patients by recurrence risk.",
        limitations=["Trained on synthetic data only.", "Single cohort of 300 patients."],
        training={"cv": "5-fold CV stratified on the event, 2 repeats", "model": "fused", "seed": 0},
        validation={"external": [{"cohort": "demo_val", "n_patients": 150, "n_events": 61,
                                  "metrics": {"harrell_c": Estimate(0.69, 0.62, 0.75, 1000)}}]},
        endpoint_details={"horizons (days)": [365, 730, 1095]},
    )
    kw.update(over)
    return model_card(**kw)


def test_model_card_has_every_section_and_number():
    card = _card()
    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == list(REQUIRED_SECTIONS)
    assert card.startswith("# Model card: omics-risk-rfs (version 3)")
    assert "| Alias | champion |" in card and "models:/omics-risk-rfs@champion" in card
    assert "| Events | 120 (40%) |" in card and "| Patients | 300 |" in card
    assert "| cfdna | 279 | 93% |" in card and "| methylation | 250 | 83% |" in card
    assert "| harrell\\_c | 0.712 | 0.654–0.770 | 1000 |" in card
    assert "| ibs | 0.171 | – | – |" in card
    assert "| demo\\_val | 150 | 61 | harrell\\_c | 0.690 (0.620–0.750) |" in card
    assert "**Internal validation:** 5-fold CV stratified on the event, 2 repeats" in card
    assert "365, 730, 1095" in card
    assert "- Trained on synthetic data only." in card
    assert "not a certified medical device" in card  # default out-of-scope statements
    assert "pseudonymised" in card  # default ethics statements
    assert re.search(r"^\| scikit-survival \| \d", card, flags=re.M)
    # Escaping: the pipe in the cohort name does not split the table row.
    assert "| Cohort | demo \\| nsclc\\_postop |" in card


def test_model_card_validation_and_file(tmp_path):
    with pytest.raises(ValueError, match="limitations"):
        _card(limitations=[])
    with pytest.raises(ValueError, match="intended_use"):
        _card(intended_use=" ")
    with pytest.raises(ValueError, match="task"):
        _card(task="regression")
    card = _card(task="binary", endpoint="response", alias=None, validation=None, out_of_scope=["Screening."],
                 data={"cohort": "sclc", "n_patients": 80, "n_events": 30})
    assert "**External validation cohorts:** none yet." in card
    assert "| Positive labels | 30 (38%) |" in card and "- Screening." in card
    assert "models:/omics-risk-rfs/3" in card
    path = write_model_card(tmp_path / "card" / "model_card.md", **{**dict(
        name="m", version="1", task="survival", endpoint="os", data={"n_patients": 10, "n_events": 4},
        metrics={}, intended_use="Testing.", limitations=["Tiny."], training={})})
    assert "No metrics were recorded." in path.read_text(encoding="utf-8")


def test_templates_ship_with_the_package():
    root = files("omics_risk.evaluation") / "templates"
    assert (root / "report.html.j2").is_file() and (root / "model_card.md.j2").is_file()
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"evaluation/templates/*.j2"' in pyproject
