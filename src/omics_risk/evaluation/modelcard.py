"""Model cards (Markdown) for registered models, after Mitchell et al. 2019, "Model Cards for Model Reporting".

A card states what the model predicts and for whom, what it was trained and validated on (cohort sizes, events,
modality coverage), how well it did (metrics with bootstrap CIs), what it must not be used for, its known
limitations, and the software it ran with. It is rendered from ``templates/model_card.md.j2``; every value is
Markdown-escaped, so cohort or model names cannot break the tables or inject HTML where the card is rendered
(MLflow UI, GitHub).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from omics_risk.evaluation.bootstrap import Estimate
from omics_risk.evaluation.tables import format_p, is_p_value

__all__ = ["DEFAULT_ETHICS", "DEFAULT_OUT_OF_SCOPE", "REQUIRED_SECTIONS", "model_card", "write_model_card"]

#: The ``##`` headings every card has, in order.
REQUIRED_SECTIONS = (
    "Model details",
    "Task and endpoint",
    "Training data",
    "Validation",
    "Metrics",
    "Intended use",
    "Out-of-scope uses",
    "Limitations",
    "Ethical and privacy considerations",
    "Software versions",
)

DEFAULT_OUT_OF_SCOPE = [
    "Clinical decision-making for individual patients: the model is a research tool, not a certified medical "
    "device, and has not been evaluated in a prospective clinical study.",
    "Populations, disease stages, treatments or assay platforms that differ from the training cohort without "
    "external validation on such a cohort.",
    "Endpoints or horizons other than those it was trained and validated for (risk scores are relative and only "
    "comparable within a cohort processed the same way).",
    "Inferring causal effects of features or modalities: contributions describe what the model uses, not "
    "biology.",
]

DEFAULT_ETHICS = [
    "Trained on pseudonymised patient data; no direct identifiers are stored in the model or its artifacts, "
    "but fitted preprocessing (imputation values, feature scaling, baseline hazards) summarises the training "
    "cohort and must be shared under the same data-use terms as the cohort.",
    "Performance may differ across sex, age, ancestry and sites; subgroup metrics should be checked before any "
    "use that could affect patients.",
    "Risk scores can be misread as individual prognoses; report them with their uncertainty and the cohort "
    "they were validated on.",
]

_VERSION_PACKAGES = ("omics-risk", "numpy", "pandas", "scikit-learn", "scikit-survival", "lifelines", "torch",
                     "torchsurv", "mlflow")

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(value: Any) -> str:
    """Inline Markdown: special characters escaped, line breaks collapsed (safe inside a table cell)."""
    text = "–" if value is None else str(value)
    return " ".join(_MD_SPECIAL.sub(r"\\\1", text).split())


def _mdblock(value: Any) -> str:
    """Block Markdown: escaped like :func:`_md`, paragraphs (blank-line separated) kept."""
    paragraphs = re.split(r"\n\s*\n", "" if value is None else str(value))
    return "\n\n".join(_md(p) for p in paragraphs if p.strip())


def _environment():
    env = Environment(loader=PackageLoader("omics_risk.evaluation", "templates"), autoescape=False,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = _md
    env.filters["mdblock"] = _mdblock
    return env


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, Estimate):
        return f"{value.value:.{digits}f} ({value.low:.{digits}f}–{value.high:.{digits}f})"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "–"
        if v.is_integer():
            return str(int(v))
        # Settings like 0.1 or 1e-4 keep their significant digits; larger numbers get fixed decimals.
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v, digits)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v, digits) for v in value)
    return "–" if value is None else str(value)


def _modality_rows(modalities: Any, n_patients: int | None) -> list[tuple[str, str, str]]:
    """``{modality: n | fraction | {"n": .., "fraction": ..}}`` or a list of names -> table rows."""
    if modalities is None:
        return []
    if isinstance(modalities, list | tuple):
        return [(str(m), "–", "–") for m in modalities]
    rows = []
    for m, cov in dict(modalities).items():
        n, frac = None, None
        if isinstance(cov, Mapping):
            n, frac = cov.get("n"), cov.get("fraction", cov.get("coverage"))
        elif isinstance(cov, int | np.integer) or (isinstance(cov, float) and cov > 1):
            n = int(cov)
        elif isinstance(cov, float | np.floating):
            frac = float(cov)
        if frac is None and n is not None and n_patients:
            frac = n / n_patients
        if n is None and frac is not None and n_patients:
            n = round(frac * n_patients)
        rows.append((str(m), "–" if n is None else str(int(n)), "–" if frac is None else f"{100 * frac:.0f}%"))
    return rows


def _metric_rows(metrics: Mapping[str, Estimate | float], digits: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, est in metrics.items():
        if isinstance(est, Estimate):
            rows.append((name, f"{est.value:.{digits}f}", f"{est.low:.{digits}f}–{est.high:.{digits}f}",
                         str(est.n_boot)))
        elif is_p_value(name) or str(name).startswith("p vs "):  # as every report shows p: 0.003, <0.001
            rows.append((name, format_p(float(est)), "–", "–"))
        else:
            rows.append((name, f"{float(est):.{digits}f}", "–", "–"))
    return rows


def _external_rows(external: Sequence[Mapping[str, Any]], digits: int) -> list[dict[str, str]]:
    rows = []
    for coh in external:
        metrics = coh.get("metrics") or {}
        base = {"cohort": str(coh.get("cohort", "–")), "n": _fmt(coh.get("n_patients")),
                "events": _fmt(coh.get("n_events"))}
        if not metrics:
            rows.append({**base, "metric": "–", "estimate": "–"})
        for name, est in metrics.items():
            rows.append({**base, "metric": str(name), "estimate": _fmt(est, digits)})
    return rows


def model_card(*, name: str, version: str | int, task: str, endpoint: str, data: Mapping[str, Any],
               metrics: Mapping[str, Estimate | float], intended_use: str, limitations: Sequence[str],
               training: Mapping[str, Any], alias: str | Sequence[str] | None = None,
               validation: Mapping[str, Any] | None = None, out_of_scope: Sequence[str] | None = None,
               ethics: Sequence[str] | None = None, versions: Mapping[str, str] | None = None,
               description: str | None = None, details: Mapping[str, Any] | None = None,
               endpoint_details: Mapping[str, Any] | None = None, metrics_note: str | None = None,
               digits: int = 3) -> str:
    """The Markdown model card of a registered model.

    Args:
        name, version, alias: registry name, version and alias(es) (``models:/NAME@ALIAS``).
        task: ``survival`` or ``binary``.
        endpoint: e.g. ``rfs``; ``endpoint_details`` adds lines (definition, time unit, horizons).
        data: the training cohort: ``cohort``, ``n_patients``, ``n_events`` and ``modalities`` (``{modality:
            n patients | fraction | {"n", "fraction"}}``); any other key becomes a row.
        metrics: ``{name: Estimate}`` (or plain floats), e.g. from ``evaluate_survival``; say where they were
            measured (pooled out-of-fold, external cohort) with ``metrics_note``.
        intended_use: who may use it for what.
        limitations: known limitations, one per item (required: a card without them is not a card).
        training: how it was fitted: ``cv`` (the internal validation scheme), model class, hyper-parameters,
            run id, seed...; every key becomes a row.
        validation: ``internal`` (text; defaults to ``training["cv"]``) and ``external``: a list of ``{cohort,
            n_patients, n_events, metrics: {name: Estimate}}``.
        out_of_scope, ethics: lists of statements (defaults: :data:`DEFAULT_OUT_OF_SCOPE`,
            :data:`DEFAULT_ETHICS`).
        versions: ``{package: version}`` (default: the installed versions of the key packages).
        details: extra "Model details" rows (model URI, run id, created...).
    """
    if task not in ("survival", "binary"):
        raise ValueError(f"task must be 'survival' or 'binary', got {task!r}")
    if not str(intended_use).strip():
        raise ValueError("intended_use must say who may use the model for what")
    if isinstance(limitations, str) or not limitations:
        raise ValueError("limitations must be a non-empty list of statements")
    aliases = [alias] if isinstance(alias, str) else list(alias or [])
    detail_rows = [("Name", name), ("Version", str(version)), ("Alias", ", ".join(aliases) or "–")]
    if aliases:
        detail_rows.append(("Model URI", f"models:/{name}@{aliases[0]}"))
    else:
        detail_rows.append(("Model URI", f"models:/{name}/{version}"))
    detail_rows += [(str(k), _fmt(v, digits)) for k, v in (details or {}).items()]

    data = dict(data)
    n_pat = data.get("n_patients")
    n_ev = data.get("n_events")
    data_rows = [("Cohort", _fmt(data.get("cohort"))), ("Patients", _fmt(n_pat))]
    if task == "survival" or n_ev is not None:
        ev = _fmt(n_ev)
        if isinstance(n_ev, int | np.integer) and n_pat:
            ev += f" ({100 * n_ev / n_pat:.0f}%)"
        data_rows.append(("Events" if task == "survival" else "Positive labels", ev))
    data_rows += [(str(k), _fmt(v, digits)) for k, v in data.items()
                  if k not in ("cohort", "n_patients", "n_events", "modalities")]

    validation = dict(validation or {})
    internal = validation.get("internal") or training.get("cv") or "not recorded"
    task_text = ("survival (time to event; censored follow-up)" if task == "survival"
                 else "binary response (responder vs non-responder)")
    return _environment().get_template("model_card.md.j2").render(
        name=str(name), version=str(version), description=description, details=detail_rows,
        task=task, task_text=task_text, endpoint=str(endpoint),
        endpoint_extra=[(str(k), _fmt(v, digits)) for k, v in (endpoint_details or {}).items()],
        data_rows=data_rows, modality_rows=_modality_rows(data.get("modalities"), n_pat),
        training_rows=[(str(k), _fmt(v, digits)) for k, v in training.items()],
        internal=_fmt(internal), external=_external_rows(validation.get("external") or [], digits),
        metric_rows=_metric_rows(metrics, digits),
        metrics_note=metrics_note or "95% percentile bootstrap confidence intervals over patients.",
        intended_use=intended_use, out_of_scope=list(out_of_scope or DEFAULT_OUT_OF_SCOPE),
        limitations=list(limitations), ethics=list(ethics or DEFAULT_ETHICS),
        versions=list((versions or _versions()).items()),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        omics_risk_version=_versions().get("omics-risk", "unknown"),
    )


def write_model_card(path: str | Path, **kw: Any) -> Path:
    """Write :func:`model_card` (same keyword arguments) to ``path`` (e.g. ``model_card.md``) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(**kw), encoding="utf-8")
    return path
