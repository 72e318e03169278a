"""``omics-risk score``: the command line over the batch scorer, its output and its exit codes (0 scored, 1 the
cohort or model does not fit, 2 a usage error such as a wrong extension, a horizon without unit or an unknown URI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from omics_risk.cli import build_parser, main


def test_score_is_a_subcommand_with_its_options() -> None:
    args = build_parser().parse_args(["score", "--model", "models:/m@champion", "--cohort", "c", "--out", "s.csv",
                                      "--horizons", "1y", "730", "--risk-groups", "median", "--chunk-size", "8"])
    assert args.command == "score" and args.model == "models:/m@champion" and args.horizons == ["1y", "730"]
    assert args.risk_groups == "median" and args.chunk_size == 8 and args.cohort == Path("c")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--cohort", "c", "--out", "s.csv"])  # --model is required


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "scores.xlsx"], "must end in .parquet or .csv"),
        (["--out", "scores.csv", "--horizons", "3"], "would be 3 days"),
        (["--out", "missing_dir/scores.csv"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                           message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["score", "--model", "models:/none@x", "--cohort", str(tmp_path), "--tracking-uri",
                 str(tmp_path / "mlflow.db"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("omics-risk score: error:") and message in err


@pytest.mark.slow
def test_cli_scores_the_demo_cohort_to_csv(demo: SimpleNamespace, problem_cohort: SimpleNamespace, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.csv"
    code = main(["score", "--model", demo.uri, "--cohort", str(problem_cohort.root), "--out", str(out),
                 "--tracking-uri", demo.tracking_uri, "--features", str(problem_cohort.features),
                 "--horizons", "1y", "2y", "--risk-groups", "median", "--workers", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert df["patient_id"].tolist() == [*problem_cohort.patients, "PO9999"]
    assert list(df.columns[:7]) == ["patient_id", "status", "reason", "risk_score", "risk_group", "surv_365d",
                                    "surv_730d"]
    assert set(df.loc[df["status"] != "failed", "risk_group"]) <= {"low", "high"}
    counts = df["status"].value_counts()
    assert f"ok {counts.get('ok', 0)}, partial {counts.get('partial', 0)}, failed {counts.get('failed', 0)}" \
        in printed
    report = json.loads((tmp_path / "scores.csv.report.json").read_text())
    assert report["horizons"] == [365.0, 730.0] and report["risk_groups"] == "median"
    assert report["model"]["uri"] == demo.uri and report["model"]["wrapper_ok"] is True


@pytest.mark.slow
def test_cli_exit_codes_for_a_cohort_that_does_not_fit_and_an_unknown_model(
        demo: SimpleNamespace, problem_cohort: SimpleNamespace, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the same data with the clinical column 'stage' removed: the model needs it
    bad = tmp_path / "no_stage"
    bad.mkdir()
    for entry in problem_cohort.root.iterdir():
        if entry.name not in ("clinical.csv", "cohort.yaml"):
            (bad / entry.name).symlink_to(entry)
    pd.read_csv(problem_cohort.root / "clinical.csv", dtype=str).drop(columns=["stage"]).to_csv(
        bad / "clinical.csv", index=False)
    spec = yaml.safe_load((problem_cohort.root / "cohort.yaml").read_text())
    del spec["clinical"]["stage"]
    spec["data_roots"] = [str(problem_cohort.root)]  # the links lead there: declared, or they are refused
    (bad / "cohort.yaml").write_text(yaml.safe_dump(spec))
    base = ["--tracking-uri", demo.tracking_uri, "--out", str(tmp_path / "s.parquet"), "--quiet"]
    assert main(["score", "--model", demo.uri, "--cohort", str(bad), *base]) == 1
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "stage" in err
    assert main(["score", "--model", "models:/omics-risk-rfs@nope", "--cohort", str(bad), *base]) == 2
    assert "cannot resolve model 'models:/omics-risk-rfs@nope'" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.slow
def test_console_script_reads_the_tracking_uri_from_the_environment(demo: SimpleNamespace,
                                                                    problem_cohort: SimpleNamespace,
                                                                    tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": demo.tracking_uri}
    exe = Path(sys.executable).with_name("omics-risk")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "omics_risk.cli"])]
    run = subprocess.run([*cmd, "score", "--model", demo.uri, "--cohort", str(problem_cohort.root), "--out",
                          str(tmp_path / "s.parquet"), "--features", str(problem_cohort.features), "--quiet"],
                         env=env, capture_output=True, text=True, encoding="utf-8", timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "scored 15 patients" in run.stdout
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 15


# ------------------------------------------------------------------------------------------------ hardening
# Exit codes (README.md): 0 written, 1 refused (cohort or model does not fit, untrusted model files), 2 usage or
# input error (wrong path, bad option, no registry, model not found, work folder in use), 130 Ctrl-C, 143 SIGTERM.
def _args(lt: SimpleNamespace, out: Path, *extra: str) -> list[str]:
    """``omics-risk score`` of the logged table model's local folder on its fresh cohort."""
    return ["score", "--model", str(lt.model_dir), "--cohort", str(lt.cohort), "--out", str(out), "--workers", "1",
            "--quiet", *extra]


def _env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's package first on the path."""
    import omics_risk

    src = str(Path(omics_risk.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}


class _Payload:
    """Pickles into a call of ``open(path, 'w')``: unpickling it creates the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _valid_cohort(tmp_path: Path) -> Path:
    from scoring_cohorts import write_table_cohort

    return write_table_cohort(tmp_path / "cohort", n=6, seed=2)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_cohort", "--cohort {tmp}/nowhere does not exist: a cohort is a folder with cohort.yaml"),
        ("file_cohort", "--cohort {tmp}/cohort/clinical.csv is a file, not a folder"),
        ("no_yaml", "--cohort {tmp}/cohort has no cohort.yaml: it is not a cohort folder"),
        ("out_is_folder", "--out {tmp}/out.csv is a folder: give a file name ending in .parquet or .csv"),
        ("work_is_file", "--work-dir {tmp}/cohort/samples.csv is a file"),
        ("chunk", "--chunk-size must be a positive number of patients, got 0"),
        ("margin", "--shift-margin must be a number >= 0, got -1.0"),
        ("missing_model_folder", "cannot resolve model '{tmp}/no_model': no such folder"),
        ("not_a_model_folder", "cannot resolve model '{tmp}/cohort': {tmp}/cohort holds no MLmodel file"),
    ],
)
def test_input_errors_exit_2_before_the_model_is_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, case: str,
                                                       message: str) -> None:
    from omics_risk.workflows import scoring as batch

    def never(*args, **kwargs):
        raise AssertionError("the model must not be loaded when an input is wrong")

    monkeypatch.setattr(batch, "load_batch_model", never)
    monkeypatch.chdir(tmp_path)
    cohort = _valid_cohort(tmp_path)
    args = {"--model": "models:/omics-risk-rfs@challenger", "--cohort": str(cohort), "--out": str(tmp_path / "s.csv")}
    extra: list[str] = []
    if case == "missing_cohort":
        args["--cohort"] = str(tmp_path / "nowhere")
    elif case == "file_cohort":
        args["--cohort"] = str(cohort / "clinical.csv")
    elif case == "no_yaml":
        (cohort / "cohort.yaml").unlink()
    elif case == "out_is_folder":
        (tmp_path / "out.csv").mkdir()
        args["--out"] = str(tmp_path / "out.csv")
    elif case == "work_is_file":
        extra = ["--work-dir", str(cohort / "samples.csv")]
    elif case == "chunk":
        extra = ["--chunk-size", "0"]
    elif case == "margin":
        extra = ["--shift-margin", "-1"]
    elif case == "missing_model_folder":
        args["--model"] = str(tmp_path / "no_model")
    elif case == "not_a_model_folder":
        args["--model"] = str(cohort)
    code = main(["score", *[x for kv in args.items() for x in kv], *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("omics-risk score: error: ") and message.format(tmp=tmp_path) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".s.csv.work").exists()


@pytest.mark.parametrize("source", ["default", "env", "flag"])
def test_no_registry_names_the_tracking_uri_and_creates_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   source: str) -> None:
    # run outside any project: the default ./mlflow.db does not exist, and must not be created
    cohort = _valid_cohort(tmp_path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "missing" / "mlflow.db"
    extra: list[str] = []
    if source == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    elif source == "flag":
        extra = ["--tracking-uri", str(db)]
    else:
        db = cwd / "mlflow.db"
    code = main(["score", "--model", "models:/omics-risk-rfs@challenger", "--cohort", str(cohort), "--out",
                 str(cwd / "s.csv"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot resolve model 'models:/omics-risk-rfs@challenger': there is no MLflow registry at {db}" in err
    said = {"default": "the default, mlflow.db in the current folder", "env": "$MLFLOW_TRACKING_URI",
            "flag": "--tracking-uri"}[source]
    assert f"the tracking URI sqlite:///{db} came from {said}" in err
    assert "--tracking-uri sqlite:////path/to/mlflow.db" in err and "MLFLOW_TRACKING_URI" in err
    assert "Traceback" not in err
    assert not db.exists() and not (cwd / "mlflow.db").exists() and not list(cwd.iterdir())


def test_unknown_model_in_an_existing_registry_says_where_it_looked(logged_table: SimpleNamespace, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["score", "--model", "models:/omics-risk-table@nope", "--cohort", str(logged_table.cohort), "--out",
                 str(tmp_path / "s.csv"), "--tracking-uri", logged_table.tracking_uri, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot resolve model 'models:/omics-risk-table@nope'" in err
    assert f"the tracking URI {logged_table.tracking_uri} came from --tracking-uri" in err


def test_registered_model_scores_through_the_cli(logged_table: SimpleNamespace, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.parquet"
    code = main(["score", "--model", logged_table.uri, "--cohort", str(logged_table.cohort), "--out", str(out),
                 "--tracking-uri", logged_table.tracking_uri, "--workers", "1", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "scored 20 patients" in printed.out and len(pd.read_parquet(out)) == 20
    assert json.loads((tmp_path / "s.parquet.report.json").read_text())["model"]["wrapper_ok"] is True


def test_tampered_wrapper_exits_1_unless_explicitly_allowed(logged_table: SimpleNamespace, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import pickle
    import shutil

    # the tester's case: a registered model whose python_model.pkl was replaced by a payload
    model = Path(shutil.copytree(logged_table.model_dir, tmp_path / "model"))
    marker = tmp_path / "payload-ran"
    (model / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    out = tmp_path / "s.csv"
    args = ["score", "--model", str(model), "--cohort", str(logged_table.cohort), "--out", str(out), "--workers",
            "1", "--quiet"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert printed.err.startswith(f"omics-risk score: error: refusing {model}: python_model.pkl references io.open "
                                  "instead of only omics_risk.scoring.pyfunc.OmicsRiskPyfunc")
    assert "would run that code" in printed.err and "pass --allow-unverified-wrapper" in printed.err
    assert not out.exists() and not marker.exists()
    # explicitly allowed: scored (our loader never unpickles it), and the warning is in the printed result
    assert main([*args, "--allow-unverified-wrapper"]) == 0
    printed = capsys.readouterr()
    assert not marker.exists() and len(pd.read_csv(out)) == 20
    line = next(x for x in printed.out.splitlines() if x.startswith("warning: python_model.pkl references"))
    assert line.endswith("scored anyway (--allow-unverified-wrapper)")
    report = json.loads((tmp_path / "s.csv.report.json").read_text())
    assert report["model"]["wrapper_ok"] is False and line[len("warning: "):] in report["warnings"]


def test_warnings_raised_while_scoring_are_printed_once_and_library_notices_filtered(
        logged_table: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from omics_risk.workflows import scoring as batch

    real = batch._Scorer.run
    lib = "/env/lib/python3.11/site-packages/somelib/core.py"

    def noisy(self, patients):
        warnings.warn("a chunk-level note worth saying", UserWarning, stacklevel=1)
        warnings.warn_explicit("values went odd", RuntimeWarning, lib, 10, module="somelib.core")
        warnings.warn_explicit("old API, use new_api", DeprecationWarning, lib, 20, module="somelib.core")
        return real(self, patients)

    monkeypatch.setattr(batch._Scorer, "run", noisy)
    out = tmp_path / "s.csv"
    assert main(_args(logged_table, out, "--chunk-size", "8")) == 0  # 3 chunks: each warns
    printed = capsys.readouterr()
    own = "warning: UserWarning from test_cli_score: a chunk-level note worth saying"
    assert printed.out.count(own) == 1
    assert printed.out.count("warning: RuntimeWarning from somelib: values went odd") == 1
    assert "old API" not in printed.out + printed.err  # another library's deprecation notice: filtered
    report = json.loads((tmp_path / "s.csv.report.json").read_text())
    assert own[len("warning: "):] in report["warnings"]
    assert "RuntimeWarning from somelib: values went odd" in report["warnings"]
    # the notes of the scoring itself are printed once too (they are also raised as warnings for Python callers)
    for note in report["warnings"]:
        assert printed.out.count(note) == 1


def test_ctrl_c_keeps_checkpoints_exits_130_and_the_next_run_resumes(logged_table: SimpleNamespace, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from omics_risk.workflows import scoring as batch

    real = batch._Scorer.run
    calls: list[int] = []

    def interrupted(self, patients):
        calls.append(len(patients))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second chunk
        return real(self, patients)

    monkeypatch.setattr(batch._Scorer, "run", interrupted)
    out = tmp_path / "s.csv"
    assert main(_args(logged_table, out, "--chunk-size", "6")) == 130  # 20 patients: 4 chunks
    err = capsys.readouterr().err
    (ckpt,) = (tmp_path / ".s.csv.work" / "checkpoints").iterdir()
    assert err == (f"omics-risk score: interrupted after 1 of 4 chunks; checkpoints kept in {ckpt}: run the same "
                   "command again to resume\n")
    assert not out.exists() and sorted(p.name for p in ckpt.iterdir()) == ["chunk-000000.json",
                                                                          "chunk-000000.parquet"]
    monkeypatch.setattr(batch._Scorer, "run", real)
    assert main(_args(logged_table, out, "--chunk-size", "6")) == 0
    printed = capsys.readouterr().out
    assert "1 of 4 chunks resumed" in printed and len(pd.read_csv(out)) == 20
    assert not ckpt.exists()  # removed after success


def test_ctrl_c_before_scoring_and_with_no_resume(logged_table: SimpleNamespace, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from omics_risk.workflows import scoring as batch

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    real = batch._extract
    monkeypatch.setattr(batch, "_extract", stop)
    out = tmp_path / "s.csv"
    assert main(_args(logged_table, out)) == 130
    work = tmp_path / ".s.csv.work"
    assert capsys.readouterr().err == (f"omics-risk score: interrupted while extracting features; what was extracted "
                                       f"is cached in {work}: run the same command again to resume\n")
    monkeypatch.setattr(batch, "_extract", real)
    monkeypatch.setattr(batch._Scorer, "run", stop)
    assert main(_args(logged_table, out, "--no-resume")) == 130
    assert "run the same command again without --no-resume to resume" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_like_ctrl_c_with_exit_143(logged_table: SimpleNamespace, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from omics_risk.workflows import scoring as batch

    real = batch._Scorer.run
    calls: list[int] = []

    def terminated(self, patients):
        calls.append(len(patients))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler stops the job
        return real(self, patients)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(batch._Scorer, "run", terminated)
    out = tmp_path / "s.csv"
    assert main(_args(logged_table, out, "--chunk-size", "6")) == 143
    err = capsys.readouterr().err
    assert err.startswith("omics-risk score: terminated (SIGTERM) after 1 of 4 chunks; checkpoints kept in ")
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only
    assert not out.exists()


_HOLD = """
import sys
from pathlib import Path
from omics_risk.workflows.scoring import _folder_lock
with _folder_lock(Path(sys.argv[1]), "work folder", []):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_the_same_work_folder_exits_2_and_a_killed_holder_leaves_no_lock(
        logged_table: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.csv"
    work = tmp_path / ".s.csv.work"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(work)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=_env())
    try:
        line = holder.stdout.readline().strip()
        assert line == "held", holder.stderr.read()
        assert main(_args(logged_table, out)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"omics-risk score: error: another omics-risk score run is using the work folder "
                              f"{work} (pid {holder.pid} on host ")
        assert "wait for it to finish, or give this run another --out or --work-dir" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
    finally:
        holder.kill()  # SIGKILL: it never releases the lock itself
        holder.communicate()
    assert main(_args(logged_table, out)) == 0  # the OS dropped the dead holder's lock: nothing stale to remove
    assert (work / ".score.lock").read_text() == ""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signame", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                        ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_a_real_signal_to_the_console_command_ends_with_one_line(logged_table: SimpleNamespace, tmp_path: Path,
                                                                 signame: str, code: int, said: str) -> None:
    import signal
    import time

    script = """
import signal, sys, time
from pathlib import Path
# Ctrl-C as in a terminal, whatever the test process left (a child inherits an ignored SIGINT, and Python then
# installs no KeyboardInterrupt handler)
signal.signal(signal.SIGINT, signal.default_int_handler)
from omics_risk import cli
from omics_risk.workflows import scoring as batch
ready, real, calls = Path(sys.argv[1]), batch._Scorer.run, []
def run(self, patients):
    calls.append(1)
    if len(calls) == 2:
        ready.write_text("in chunk 2")
        while True:
            time.sleep(0.05)
    return real(self, patients)
batch._Scorer.run = run
sys.exit(cli.main(sys.argv[2:]))
"""
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", script, str(ready),
                             *_args(logged_table, tmp_path / "s.csv", "--chunk-size", "6")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", env=_env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300  # a bound on waiting for the handshake, not a timing assertion
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate()[1] if proc.poll() is not None else "no handshake"
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"omics-risk score: {said} after 1 of 4 chunks; checkpoints kept")
