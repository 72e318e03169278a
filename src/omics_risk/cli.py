"""The ``omics-risk`` command line: synth, validate, extract, score, monitor, surveil, convert.

Imports of the package and of numpy / pandas / torch / mlflow are lazy (inside the subcommands, each saying so) so that
``omics-risk --help`` answers instantly and a subcommand only pays for what it uses: ``validate`` never loads torch or
mlflow, and ``score`` checks its inputs before loading them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from omics_risk import __version__

KINDS = ("nsclc-postop", "sclc", "nsclc-advanced")


def _cmd_synth(args: argparse.Namespace) -> int:
    from omics_risk.data.synthetic import generate_cohort  # lazy: numpy, pandas and imaging libraries

    kwargs = {}
    if args.fragments is not None:
        kwargs["fragments_per_sample"] = args.fragments
    if args.metabolites is not None:
        kwargs["n_metabolites"] = args.metabolites
    if args.ct_shape is not None:
        kwargs["ct_shape"] = tuple(args.ct_shape)
    if args.draw_every is not None:
        kwargs["draw_every"] = args.draw_every
    out = generate_cohort(args.kind, n=args.n, seed=args.seed, out=args.out, workers=args.workers,
                          overwrite=args.overwrite, progress=not args.quiet, **kwargs)
    truth = Path(out) / "truth" / "summary.json"
    summary = json.loads(truth.read_text()) if truth.is_file() else {}
    oracle = {k: v for k, v in summary.items() if k.startswith("oracle")}
    print(f"wrote {args.kind} cohort of {args.n} patients (seed {args.seed}) to {out}")
    if oracle:
        print("truth (never read by training or scoring): " + json.dumps(oracle))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from omics_risk.data.validate import validate_cohort  # lazy: pandas and the readers, not for --help

    report = validate_cohort(args.cohort, deep=not args.quick, workers=args.workers, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.to_text())
    return 0 if report.ok else 1


def _cmd_extract(args: argparse.Namespace) -> int:
    from omics_risk.features.extract import extract_cohort  # lazy: pandas and the extractors

    config = yaml.safe_load(args.config.read_text()) if args.config else None
    summary = extract_cohort(args.cohort, args.out, config=config, modalities=args.modality or None,
                             workers=args.workers, force=args.force, progress=not args.quiet)
    print(summary.to_text())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from omics_risk.data.convert import convert_tcga  # lazy: pandas, only for convert
    from omics_risk.data.convert.tcga_projects import tcga_project  # lazy: as above

    project = tcga_project(args.project)  # an unknown code: one line, before any file is read
    folder = f"tcga_{project.code.lower()}"
    src = args.src if args.src is not None else Path("../shared/data") / folder
    out = args.out if args.out is not None else Path("data") / folder
    out = convert_tcga(src, out, project.code, overwrite=args.overwrite)
    print(f"wrote the TCGA {project.code} cohort to {out}; check it with: omics-risk validate {out}")
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from omics_risk.workflows.monitor import monitor_cohort  # lazy: pandas, hydra and the monitoring package

    result = monitor_cohort(args.cohort, args.out, rule=args.rule, overrides=args.set or [], level=args.level,
                            as_of_day=args.as_of, config_dir=args.config_dir, tracking_uri=args.tracking_uri,
                            experiment=args.experiment, grid=not args.no_grid, risk=args.risk,
                            model=args.model, features_dir=args.features, progress=not args.quiet)
    print(result.to_text())
    return 0


#: Exit codes of ``omics-risk score`` (README.md, docs/scoring.md).
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, ``kill``), raised like Ctrl-C so the run stops the same clean way."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while scoring, so checkpoints are kept and locks released as on Ctrl-C
    (only in the main thread, where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tracking_source(cli_uri: str | None) -> str:
    """Where the tracking URI came from, for the message when the model cannot be found."""
    if cli_uri is not None and str(cli_uri).strip():
        return "--tracking-uri"
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return "$MLFLOW_TRACKING_URI"
    return "the default, mlflow.db in the current folder"


def _quiet_library_notices() -> None:
    """Filter what other libraries say to their own developers (deprecations, optional extras), by category and
    module; every other warning reaches the printed result (``score_cohort`` turns them into notes)."""
    from omics_risk.workflows.scoring import LIBRARY_NOTICES  # lazy: pandas and the scoring modules, only for score

    for category in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=category, module=r"omics_risk(\.|$)")
    # urllib3 (MLflow's HTTP client): "SOCKS support requires PySocks", about a proxy feature scoring does not use
    warnings.filterwarnings("ignore", module=r"urllib3(\.|$)")


def _cmd_score(args: argparse.Namespace) -> int:
    """``omics-risk score``; Ctrl-C and SIGTERM end it with one line on stderr (exit 130 / 143), never a traceback."""
    done: list[Path] = []  # the output, once score_cohort has written it
    try:
        with _sigterm_as_interrupt():
            return _score(args, done)
    except KeyboardInterrupt as exc:
        from omics_risk.workflows.scoring import ScoringInterrupted  # lazy: as in _quiet_library_notices

        terminated = any(isinstance(e, _Terminated) for e in (exc, exc.__cause__, exc.__context__))
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        if isinstance(exc, ScoringInterrupted):
            text = exc.describe(what)
        elif done:
            text = f"{what} after the output {done[0]} was written"
        else:
            text = f"{what} before scoring started; nothing was written"
        print(f"omics-risk score: {text}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _score(args: argparse.Namespace, done: list[Path]) -> int:
    # lazy: pandas and the scoring modules (no torch, no mlflow yet), only for score
    from omics_risk.workflows.scoring import check_inputs, check_model_uri, parse_horizons, warning_text

    def fail(code: int, message: str, caught: Sequence[warnings.WarningMessage] = ()) -> int:
        print(f"omics-risk score: error: {message}", file=sys.stderr)
        for text in dict.fromkeys(warning_text(w) for w in caught):  # what the failed run warned about, too
            print(f"omics-risk score: warning: {text}", file=sys.stderr)
        return code

    horizons = parse_horizons(args.horizons)
    try:  # the cheap checks first: a typo costs a second, not a model load
        check_inputs(args.cohort, args.out, work_dir=args.work_dir, features_dir=args.features,
                     risk_groups=args.risk_groups, chunk_size=args.chunk_size, shift_margin=args.shift_margin)
        if not str(args.model).startswith(("models:/", "runs:/")):  # a model folder: checked without MLflow
            check_model_uri(args.model)
    except ValueError as exc:
        return fail(EXIT_USAGE, str(exc))

    # lazy: mlflow and torch load only once the cheap checks above passed
    import mlflow

    from omics_risk.data.contract import CohortError  # lazy: as above
    from omics_risk.scoring.pyfunc import UntrustedModelClassError  # lazy: mlflow and torch, as above
    from omics_risk.tracking.mlflow_utils import tracking_uri  # lazy: mlflow, as above
    from omics_risk.workflows.scoring import (  # lazy: as above
        CohortMismatchError,
        ModelLoadError,
        ModelNotFoundError,
        RegistryNotFoundError,
        ScoreInputError,
        WorkDirLockedError,
        score_cohort,
    )

    uri = tracking_uri(args.tracking_uri, Path.cwd())
    source = _tracking_source(args.tracking_uri)  # before set_tracking_uri, which exports MLFLOW_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    with warnings.catch_warnings(record=True) as caught:
        _quiet_library_notices()
        try:
            result = score_cohort(args.model, args.cohort, args.out, features_dir=args.features,
                                  work_dir=args.work_dir, horizons=horizons, risk_groups=args.risk_groups,
                                  chunk_size=args.chunk_size, workers=args.workers, resume=not args.no_resume,
                                  keep_checkpoints=args.keep_checkpoints, shift_margin=args.shift_margin,
                                  progress=not args.quiet, allow_unverified_wrapper=args.allow_unverified_wrapper)
        except ModelNotFoundError as exc:
            hint = ""
            if str(args.model).startswith(("models:/", "runs:/")):  # which registry was asked; how to ask another
                hint = (f"\n  the tracking URI {uri} came from {source}; pass another "
                        "with --tracking-uri sqlite:////path/to/mlflow.db (or http://host:5000), or set "
                        "MLFLOW_TRACKING_URI")
                if isinstance(exc, RegistryNotFoundError):
                    hint += " (run from the project folder where train.py wrote mlflow.db, or point at it)"
            return fail(EXIT_USAGE, f"{exc}{hint}", caught)
        except (ScoreInputError, WorkDirLockedError) as exc:
            return fail(EXIT_USAGE, str(exc), caught)
        except (CohortError, CohortMismatchError, ModelLoadError, UntrustedModelClassError) as exc:
            return fail(EXIT_REFUSED, str(exc), caught)
    done.append(result.out)
    print(result.to_text())
    # warnings the result does not already carry (raised outside the scoring proper): printed, never dropped
    said = set(result.warnings) | ({"\n".join(result.shift.messages())} if result.shift is not None else set())
    extra: dict[str, None] = {}
    for w in caught:
        text = warning_text(w)
        if text not in said and str(w.message) not in said:
            extra.setdefault(text, None)
    for text in extra:
        print(f"warning: {text}")
    print(f"report: {result.report_path}")
    return EXIT_OK


def _cmd_surveil(args: argparse.Namespace) -> int:
    """``omics-risk surveil``: simulate follow-up schedules (docs/surveillance.md); errors are one line, exit 2."""
    # lazy: numpy / pandas and the surveillance package load only for surveil
    from omics_risk.surveillance.settings import SurveillanceSettings
    from omics_risk.workflows.surveil import run_surveillance  # lazy: as above

    raw = yaml.safe_load(args.config.read_text()) if args.config else None
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"--config {args.config}: must be a YAML mapping of surveillance settings")
    horizon = None
    if args.horizon is not None:
        from omics_risk.workflows.scoring import parse_horizons  # lazy: as above (the horizon units of score)

        horizon = parse_horizons([args.horizon])[0]
    risk_from = args.risk_from or (None if args.model else "truth")
    settings = SurveillanceSettings.from_mapping(raw, risk_from=risk_from, horizon_days=horizon,
                                                 window_days=args.window, bootstrap=args.bootstrap, seed=args.seed)
    uri = None
    if settings.risk_from == "model":
        from omics_risk.tracking.mlflow_utils import tracking_uri  # lazy: mlflow, only with a model

        uri = tracking_uri(args.tracking_uri, Path.cwd())
    result = run_surveillance(args.cohort, args.out, settings=settings, model=args.model, tracking_uri=uri,
                              progress=not args.quiet)
    print(result.to_text())
    print(f"report: {result.paths['report']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omics-risk",
        description="Multi-omics recurrence-risk modelling for lung cancer. See README.md and docs/data_format.md.",
    )
    parser.add_argument("--version", action="version", version=f"omics-risk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a realistic synthetic cohort (with its truth) in the data contract")
    p.add_argument("--kind", choices=KINDS, default="nsclc-postop",
                   help="nsclc-postop (NCT07291921), sclc (NCT07026669) or nsclc-advanced (LUCAGEN, NCT03512847)")
    p.add_argument("--n", type=int, default=300, help="number of patients (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same cohort")
    p.add_argument("--out", required=True, type=Path, help="output cohort directory (must be empty or absent)")
    p.add_argument("--fragments", type=int, default=None, help="cfDNA fragments per sample")
    p.add_argument("--metabolites", type=int, default=None, help="metabolomics features")
    p.add_argument("--ct-shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="CT voxels")
    p.add_argument("--draw-every", type=int, default=None, metavar="DAYS",
                   help="nsclc-advanced: a ctDNA draw every DAYS days instead of before every 21-day cycle")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("validate", help="check a cohort against the data contract; exit 1 on errors")
    p.add_argument("cohort", type=Path, help="cohort directory (with cohort.yaml, clinical.csv, samples.csv)")
    p.add_argument("--quick", action="store_true", help="check tables and that files exist, without opening them")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--workers", type=int, default=None, help="parallel readers (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("extract", help="turn every modality of a cohort into cached per-patient feature tables")
    p.add_argument("cohort", type=Path, help="cohort directory")
    p.add_argument("--out", type=Path, default=None, help="feature store directory (default COHORT/features)")
    p.add_argument("--modality", action="append", help="only this modality (repeatable; default all)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML {format: [{_target_: Extractor, setting: value}]} (default: the shipped set)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="recompute even what is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("score", help="score every patient of a cohort with a registered model (one row each)")
    p.add_argument("--model", required=True,
                   help="model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a local folder")
    p.add_argument("--cohort", required=True, type=Path, help="cohort directory (data contract)")
    p.add_argument("--out", required=True, type=Path, help="output file, .parquet or .csv (written atomically)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--features", type=Path, default=None,
                   help="feature store for the extraction (default: in the work directory)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints and caches (default .OUT_NAME.work next to --out); keep it to resume")
    p.add_argument("--horizons", nargs="+", default=None, metavar="H",
                   help="survival horizons: days (365) or with a unit: 52w, 12m, 3y (default: the model's)")
    p.add_argument("--risk-groups", choices=("tertiles", "median"), default="tertiles",
                   help="risk groups from the training risks: tertiles (low/intermediate/high) or median (low/high)")
    p.add_argument("--chunk-size", type=int, default=256, help="patients per chunk (memory, checkpoints)")
    p.add_argument("--shift-margin", type=float, default=0.5,
                   help="warn for values beyond the training 1st-99th percentiles by more than this x their width")
    p.add_argument("--workers", type=int, default=None, help="extraction processes (default: all cores)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints of an interrupted run")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the per-chunk checkpoints after success")
    p.add_argument("--allow-unverified-wrapper", action="store_true",
                   help="score a model whose python_model.pkl references code other than omics-risk's wrapper (a "
                        "sign its files were changed after logging; refused by default, exit 1). omics-risk never "
                        "unpickles that file, but MLflow's loaders (spark_udf, serving) would run that code")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("surveil", help="simulate CT / ctDNA follow-up schedules on a cohort (risk-adapted, fixed, "
                                       "stage-based, ctDNA-triggered) and size the trial")
    p.add_argument("--model", default=None,
                   help="model URI whose predicted curves drive the risk-adapted schedules: models:/NAME@ALIAS, "
                        "runs:/RUN_ID/model or a local folder")
    p.add_argument("--cohort", required=True, type=Path, help="cohort directory (data contract)")
    p.add_argument("--out", required=True, type=Path, help="output folder (schedules.csv, patients.csv, report.html)")
    p.add_argument("--risk-from", choices=("model", "truth", "marginal"), default=None,
                   help="predicted curves: the --model's (default with --model), the generator's truth (synthetic "
                        "cohorts; default without --model) or the cohort's Kaplan-Meier curve (no information)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML of surveillance settings and schedules (keys of configs/surveillance/default.yaml)")
    p.add_argument("--horizon", default=None, help="surveillance horizon: days or 5y, 60m (default 5 years)")
    p.add_argument("--window", type=float, default=None,
                   help="days after onset a recurrence counts as found in time (default 90)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples of patients (default 500)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random draw (default 0)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI of the model (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_surveil)

    p = sub.add_parser("monitor", help="serial ctDNA monitoring: per-draw states, alerts, the LUCAGEN table, report")
    p.add_argument("--cohort", required=True, type=Path, help="cohort directory (data contract) with serial draws")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: samples.csv, patients.csv, summary.json, report.html (replaced atomically)")
    p.add_argument("--rule", default=None,
                   help="alert rule, a file of configs/monitor/rule/: lucagen (default), lucagen_confirmed, "
                        "redetection (MRD), lod_floor, model_risk")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting (repeatable): rule.fold=3, rule.confirm=true, window_days=60, "
                        "endpoint=os, modality=ctdna (docs/monitoring.md)")
    p.add_argument("--level", default=None,
                   help="level followed: pooled_vaf (default), mean_vaf, max_vaf, median_vaf, "
                        "mean_mutant_molecules, or a per-draw column of the variant table")
    p.add_argument("--as-of", type=float, default=None, metavar="DAY",
                   help="use only draws (and outcomes) up to this day, as a prospective look at that day")
    p.add_argument("--risk", type=Path, default=None,
                   help="a model's dynamic risk per draw, CSV sample_id,risk or patient_id,day,risk (e.g. a landmark "
                        "model scored at each landmark): written to samples.csv; the model_risk rule alerts on it")
    p.add_argument("--model", default=None, metavar="URI",
                   help="a dynamic train.py run's landmark model (its landmark_model folder or runs:/RUN_ID/"
                        "landmark_model): its risk within the horizon window at every draw, from what was measured "
                        "up to the draw (dynamic_risk, model_alert); not with --risk")
    p.add_argument("--features", type=Path, default=None, metavar="DIR",
                   help="the cohort's feature store for --model (default COHORT/features; omics-risk extract)")
    p.add_argument("--config-dir", type=Path, default=None,
                   help="folder holding monitor/ (default: the project's configs/ or $OMICS_RISK_CONFIG_DIR)")
    p.add_argument("--tracking-uri", default=None, help="log the summary, report and figures to this MLflow store")
    p.add_argument("--experiment", default="monitoring", help="MLflow experiment (with --tracking-uri)")
    p.add_argument("--no-grid", action="store_true", help="skip the rule's operating-characteristic grid")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("convert", help="convert a public data set into the data contract")
    conv = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    c = conv.add_parser("tcga", help="a TCGA project (LUSC, LUAD, BRCA, ...): its RPPA, miRNA, copy-number files "
                                     "and TCGA-CDR endpoints, whichever the folder has")
    c.add_argument("--project", required=True,
                   help="TCGA project code, the files' prefix and the TCGA-CDR type (LUSC, LUAD, BRCA, ...)")
    c.add_argument("--src", type=Path, default=None,
                   help="folder of the TCGA files (default ../shared/data/tcga_<project>)")
    c.add_argument("--out", type=Path, default=None, help="output cohort directory (default data/tcga_<project>)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing cohort in --out")
    c.set_defaults(func=_cmd_convert)
    c = conv.add_parser("tcga-lusc", help="alias of `convert tcga --project LUSC`")
    c.add_argument("--src", type=Path, default=None, help="folder of the TCGA files (default ../shared/data/tcga_lusc)")
    c.add_argument("--out", type=Path, default=None, help="output cohort directory (default data/tcga_lusc)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing cohort in --out")
    c.set_defaults(func=_cmd_convert, project="LUSC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omics-risk`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        # Expected user errors (bad paths, contract violations) get one clear line, not a traceback.
        print(f"omics-risk {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
