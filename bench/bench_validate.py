"""`omics-risk validate` on inputs that used to make it slow or huge, timed as whole processes with their peak memory.

    .venv/bin/python bench/bench_validate.py [--repeats 3] [--rows 100000] [--duplicates 10000]

Each case builds its cohort once in a temporary folder from the tiny valid cohort of the tests
(``tests/conftest.py``), breaks one thing, then runs ``python -m omics_risk.cli validate COHORT --quiet`` from this
checkout (``src/`` first on PYTHONPATH) ``--repeats`` times, the cases taking turns so machine load hits them alike:

- ``tiny cohort (valid)``: the baseline, i.e. start-up, imports and 17 small data files;
- ``1024^3-voxel image header``: P01's CT replaced by a complete .nii.gz whose header declares 1024 x 1024 x 1024
  int16 voxels (2 GiB of zeros, ~2 MB compressed); refused from the header (``readers.check_image_header``) where it
  used to be decompressed and read whole;
- ``clinical.csv, N rows, D duplicated patient_ids``: N patients, D of whose rows repeat an earlier patient_id
  (the duplicate check of ``data/contract.py``; before it was made linear a run took minutes).

With ``--baseline SRC`` (the ``src/`` folder of another checkout, e.g. the previous release in a git worktree),
each case also runs once on that code in the same session, under ``--baseline-timeout`` seconds, and the table gives
the ratio of its time and memory to this checkout's median (a run killed at the timeout gives a lower bound).

Wall-clock seconds (min / median / max) include interpreter start-up. Peak memory is the child's own ``ru_maxrss``
(``os.wait4``: what ``getrusage(RUSAGE_CHILDREN)`` reports for a single child), the maximum over the repeats.
Prints a markdown table and writes it to bench/results_validate.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "data")]

from broken_cohorts import write_huge_nifti  # noqa: E402

from conftest import CLINICAL_CSV, make_valid_cohort  # noqa: E402

RESULTS = ROOT / "bench" / "results_validate.md"


def _huge_image(root: Path) -> None:
    write_huge_nifti(root / "ct" / "P01_preop.nii.gz")


def _duplicated_clinical(rows: int, duplicates: int) -> Callable[[Path], None]:
    """clinical.csv with ``rows`` rows: the six real patients, new ones, and ``duplicates`` repeats of earlier ids."""

    def build(root: Path) -> None:
        header, *real = CLINICAL_CSV.strip().splitlines()
        lines = [header, *real]
        unique = rows - duplicates - len(real)
        if unique < 1:
            sys.exit(f"--rows {rows} leaves no room for {duplicates} duplicates and the 6 real patients")
        for k in range(unique):
            lines.append(f"X{k:07d},{50 + k % 30},{'MF'[k % 2]},IIA,{k % 2},{1 + k % 60},{k % 2},{k % 2}")
        for k in range(duplicates):  # spread over the file, each repeating an earlier generated patient
            j = (k * 7919) % unique
            lines.append(f"X{j:07d},{50 + j % 30},{'MF'[j % 2]},IIA,{j % 2},{1 + j % 60},{j % 2},{j % 2}")
        (root / "clinical.csv").write_text("\n".join(lines) + "\n")

    return build


def _run(cohort: Path, log: Path, src: Path = ROOT / "src", timeout: float | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one whole ``validate`` process (exit -9: killed at ``timeout``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "omics_risk.cli", "validate", str(cohort), "--quiet"]
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if timer is not None:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def _summary(log: Path) -> str:
    """The report's last line ('N error(s), M warning(s)'), or the tail of a crash."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000, help="clinical.csv rows of the duplicate case")
    ap.add_argument("--duplicates", type=int, default=10_000, help="of those rows, how many repeat a patient_id")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--baseline", type=Path, default=None, help="src/ of another checkout to compare against")
    ap.add_argument("--baseline-timeout", type=float, default=600.0, help="seconds before a baseline run is killed")
    args = ap.parse_args()

    cases: dict[str, Callable[[Path], None]] = {
        "tiny cohort (valid)": lambda root: None,
        "1024^3-voxel image header": _huge_image,
        f"clinical.csv, {args.rows:,} rows, {args.duplicates:,} duplicated patient_ids": _duplicated_clinical(
            args.rows, args.duplicates
        ),
    }
    load_before = os.getloadavg()[0]
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in cases}
    summaries: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench_validate_") as tmp:
        roots = {}
        for k, (name, build) in enumerate(cases.items()):
            roots[name] = make_valid_cohort(Path(tmp) / f"case{k}")
            build(roots[name])
        for r in range(args.repeats):
            for name, root in roots.items():
                log = Path(tmp) / f"{root.name}_{r}.log"
                seconds, mb, code = _run(root, log)
                results[name].append((seconds, mb, code))
                summaries[name] = _summary(log)
                msg = f"{name} repeat {r}: {seconds:.2f} s, {mb:.0f} MB, exit {code}: {summaries[name]}"
                print(msg, file=sys.stderr, flush=True)
        baseline: dict[str, tuple[float, float, int]] = {}
        for name, root in roots.items() if args.baseline is not None else ():
            log = Path(tmp) / f"{root.name}_baseline.log"
            baseline[name] = _run(root, log, args.baseline, args.baseline_timeout)
            seconds, mb, code = baseline[name]
            print(f"{name} baseline: {seconds:.2f} s, {mb:.0f} MB, exit {code}: {_summary(log)}", file=sys.stderr,
                  flush=True)
    load_after = os.getloadavg()[0]

    lines = [
        "# `omics-risk validate`: whole-process time and peak memory",
        "",
        f"`.venv/bin/python bench/bench_validate.py --repeats {args.repeats} --rows {args.rows} --duplicates "
        f"{args.duplicates}`: `python -m omics_risk.cli validate COHORT --quiet` from this checkout, start-up "
        "included, the cases taking turns. Peak RSS is the child process's own `ru_maxrss` (max over the repeats); "
        "the valid tiny cohort is the floor (interpreter, pandas, pyarrow, SimpleITK, nibabel, pysam).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; 1-min load "
        f"average {load_before:.1f} at the start, {load_after:.1f} at the end.",
        "",
        "| case | runs | min s | median s | max s | peak RSS MB | exit | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        secs = [s for s, _, _ in runs]
        codes = sorted({c for _, _, c in runs})
        lines.append(
            f"| {name} | {len(runs)} | {min(secs):.2f} | {statistics.median(secs):.2f} | {max(secs):.2f} | "
            f"{max(m for _, m, _ in runs):.0f} | {', '.join(map(str, codes))} | {summaries[name]} |"
        )
    lines += [
        "",
        "Exit 1 is expected for the broken cases (validate found errors); the report column is the last line of the "
        "last run's report.",
    ]
    if baseline:
        lines += [
            "",
            f"Baseline: the same cases once on `{args.baseline}` in the same session (killed after "
            f"{args.baseline_timeout:.0f} s: exit -9, a lower bound).",
            "",
            "| case | baseline s | baseline peak RSS MB | baseline exit | time ratio (baseline / median) | "
            "memory ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, (seconds, mb, code) in baseline.items():
            med = statistics.median(s for s, _, _ in results[name])
            peak = max(m for _, m, _ in results[name])
            bound = ">= " if code == -9 else ""
            lines.append(f"| {name} | {bound}{seconds:.1f} | {mb:.0f} | {code} | {bound}{seconds / med:.1f}x | "
                         f"{bound}{mb / peak:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
