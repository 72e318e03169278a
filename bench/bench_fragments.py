"""Benchmark: omics-risk cfDNA fragmentomics against FinaleToolkit 1.1.0 on the same file, in the same run.

FinaleToolkit is not a project dependency; install it once into its own venv:

    python3 -m venv /tmp/finale-venv && /tmp/finale-venv/bin/pip install finaletoolkit==1.1.0

then, from the repository root, with the project venv:

    .venv/bin/python bench/bench_fragments.py [--finaletoolkit /tmp/finale-venv/bin/finaletoolkit]
        [--fragments 2000000] [--repeats 3] [--workdir bench/results/fragments] [--out bench/results_fragments.md]

It simulates a library of ``--fragments`` fragments on the synthetic genome (~24 Mb, 22 chromosomes; 20 % tumour
DNA with SCLC-like copy-number changes), written as a BGZF + tabix fragment file with its FASTA (cached in
``--workdir``), and times, single worker:

- length histogram: ``finaletoolkit frag-length-bins --min-length 50 --max-length 350 -q 30`` vs
  ``read_fragments`` + ``length_histogram``;
- coverage over 1-Mb bins (midpoint): ``finaletoolkit coverage BINS.bed -q 30`` vs ``read_fragments`` +
  ``bin_counts``;
- end motifs (k = 4, MAPQ >= 20): ``finaletoolkit end-motifs`` vs ``read_fragments`` + ``end_motif_counts`` (with
  the FASTA read from disk each repeat).

Each of our end-to-end timings includes reading and parsing the file, as each FinaleToolkit command does; the
compute alone (fragments already in memory) is reported too. Outputs are checked for equality (end motifs after
replaying FinaleToolkit's double counting of fragments that cross its 1-Mb windows). FinaleToolkit and ours run
alternately ``--repeats`` times and medians are reported, wall clock and CPU (the machine may be shared: the load
average is reported). The FinaleToolkit start-up cost (a command on a 10-fragment file) is reported too, so its
throughput can be read without it. The markdown table is printed and written to ``--out``; the exit status is 1 if
any output differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from omics_risk.data.readers import read_chrom_sizes, read_fragments
from omics_risk.features import fragmentomics as fm

HERE = Path(__file__).resolve().parent
SEED = 20240607


def prepare(workdir: Path, n: int) -> dict[str, Path]:
    """Simulate (once) the library, its FASTA, chromosome sizes and the 1-Mb bin BED."""
    from omics_risk.data.synthetic import fragments as sim
    from omics_risk.data.synthetic.genome import get_genome, write_reference

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "frag": workdir / "library.frag.gz",
        "fasta": workdir / "reference" / "genome.fa",
        "sizes": workdir / "reference" / "genome.chrom.sizes",
        "bins": workdir / "bins_1mb.bed",
        "tiny": workdir / "tiny.frag.gz",
    }
    stamp = workdir / "stamp.json"
    want = {"fragments": n, "seed": SEED, "generator": "synthetic-genome-120"}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(p.exists() for p in paths.values()):
        return paths
    print(f"simulating {n:,} fragments on the synthetic genome in {workdir} ...", flush=True)
    genome = get_genome()
    rng = np.random.default_rng(SEED)
    arm_cn = sim.arm_copy_numbers(rng, genome, 1.0, sim.SCLC_ARM_PRIORS)
    frags = sim.simulate_fragments(rng, genome, n, 0.2, sim.bin_copy_numbers(genome, arm_cn, []))
    sim.write_fragments(frags, genome, paths["frag"])
    sim.write_fragments(frags.iloc[:10], genome, paths["tiny"])
    write_reference(genome, workdir, "sclc")
    grid = fm.BinGrid.from_sizes(read_chrom_sizes(paths["sizes"]), 1_000_000)
    bed = grid.to_frame()
    bed["name"] = "."
    bed.to_csv(paths["bins"], sep="\t", header=False, index=False)
    stamp.write_text(json.dumps(want))
    return paths


def _run_cli(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _run_ours(fn: Callable[[], object]) -> tuple[float, float, object]:
    fm._whole_genome_codes.cache_clear()  # cold caches: every repeat reads the FASTA again
    fm._bin_composition.cache_clear()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def time_pair(
    cmd: list[str], fn: Callable[[], object], repeats: int
) -> tuple[tuple[float, float], tuple[float, float], object]:
    """Median (wall, CPU) seconds of a FinaleToolkit command and of ours, run alternately so both see the same load.

    The command's CPU is user + sys of the child processes (start-up included).
    """
    ft_runs, our_runs, out = [], [], None
    for _ in range(repeats):
        ft_runs.append(_run_cli(cmd))
        w, c, out = _run_ours(fn)
        our_runs.append((w, c))
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    return (med(ft_runs, 0), med(ft_runs, 1)), (med(our_runs, 0), med(our_runs, 1)), out


def time_ours(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    runs = [_run_ours(fn) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finaletoolkit", default="/tmp/finale-venv/bin/finaletoolkit", help="FinaleToolkit CLI")
    ap.add_argument("--fragments", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=HERE / "results" / "fragments")
    ap.add_argument("--out", type=Path, default=HERE / "results_fragments.md")
    args = ap.parse_args(argv)
    ft = Path(args.finaletoolkit)
    if not ft.is_file():
        print(f"FinaleToolkit CLI not found at {ft}; create it with\n  python3 -m venv /tmp/finale-venv && "
              "/tmp/finale-venv/bin/pip install finaletoolkit==1.1.0", file=sys.stderr)  # fmt: skip
        return 2
    t0 = time.perf_counter()
    pa.set_cpu_count(1)  # single worker on our side too: pyarrow would otherwise parse with a thread pool
    pa.set_io_thread_count(1)
    p = prepare(args.workdir, args.fragments)
    sizes = read_chrom_sizes(p["sizes"])
    grid = fm.BinGrid.from_sizes(sizes, 1_000_000)
    out = args.workdir / "out"
    out.mkdir(exist_ok=True)
    ftv = subprocess.run([str(ft), "--version"], capture_output=True, text=True).stdout.strip()
    r = args.repeats
    rows = []

    print("timing FinaleToolkit start-up ...", flush=True)
    tiny = [str(ft), "frag-length-bins", str(p["tiny"]), "-o", str(out / "tiny.tsv")]
    startup = tuple(statistics.median(x) for x in zip(*(_run_cli(tiny) for _ in range(r)), strict=True))
    print("timing read_fragments alone ...", flush=True)
    read_w, read_c, frags30 = time_ours(lambda: read_fragments(p["frag"], min_mapq=30), r)
    frags20 = read_fragments(p["frag"], min_mapq=20)

    # Length histogram.
    print("timing length histograms ...", flush=True)
    cmd = [str(ft), "frag-length-bins", str(p["frag"]), "--min-length", "50", "--max-length", "350", "-q", "30",
           "-o", str(out / "flb.tsv")]  # fmt: skip
    ft_t, our_t, hist = time_pair(cmd, lambda: fm.length_histogram(read_fragments(p["frag"], min_mapq=30).lengths), r)
    compute = time_ours(lambda: fm.length_histogram(frags30.lengths, 50, 350), r)
    ref = pd.read_csv(out / "flb.tsv", sep="\t", comment="#")
    n = int(hist.sum())
    equal = bool(np.array_equal(hist[ref["min"].to_numpy() - 50], ref["count"].to_numpy()) and n == ref["count"].sum())
    rows.append(
        ("length histogram (50-350 bp, MAPQ>=30)", ft_t, our_t, compute, n, "identical" if equal else "DIFFERENT")
    )

    # Coverage over 1-Mb bins.
    print("timing coverage ...", flush=True)
    cmd = [str(ft), "coverage", str(p["frag"]), str(p["bins"]), "-q", "30", "-o", str(out / "cov.bed")]
    ft_t, our_t, cov = time_pair(cmd, lambda: fm.bin_counts(read_fragments(p["frag"], min_mapq=30), grid), r)
    compute = time_ours(lambda: fm.bin_counts(frags30, grid), r)
    ref = pd.read_csv(out / "cov.bed", sep="\t", header=None)
    equal = bool(np.array_equal(cov, ref[4].to_numpy().astype(np.int64)))
    rows.append(("coverage, 1-Mb bins (midpoint, MAPQ>=30)", ft_t, our_t, compute, int(cov.sum()),
                 "identical" if equal else "DIFFERENT"))  # fmt: skip

    # End motifs.
    print("timing end motifs ...", flush=True)
    cmd = [str(ft), "end-motifs", str(p["frag"]), str(p["fasta"]), "-k", "4", "-q", "20", "-o", str(out / "motifs.tsv")]

    def our_motifs() -> np.ndarray:
        return fm.end_motif_counts(read_fragments(p["frag"], min_mapq=20), fm.ReferenceGenome(p["fasta"]), 4)

    ft_t, our_t, counts = time_pair(cmd, our_motifs, r)
    compute = time_ours(lambda: fm.end_motif_counts(frags20, fm.ReferenceGenome(p["fasta"]), 4), r)
    ref = pd.read_csv(out / "motifs.tsv", sep="\t", header=None, names=["kmer", "freq"])
    mult = fm.finaletoolkit_motif_multiplicity(frags20, sizes)
    replay = fm.end_motif_counts(
        frags20.select(np.repeat(np.arange(len(frags20)), mult)), fm.ReferenceGenome(p["fasta"])
    )
    replay_diff = float(np.abs(replay / replay.sum() - ref["freq"].to_numpy()).max())
    plain_diff = float(np.abs(counts / counts.sum() - ref["freq"].to_numpy()).max())
    same = ref["kmer"].tolist() == fm.motif_names(4) and replay_diff < 1e-12
    note = "DIFFERENT"
    if same:
        note = (
            f"identical after replaying FinaleToolkit's double count of {int((mult > 1).sum()):,} window-crossing "
            f"fragments (max freq. diff {replay_diff:.0e}); without it {plain_diff:.1e}"
        )
    rows.append(("end motifs k=4 (MAPQ>=20, FASTA)", ft_t, our_t, compute, len(frags20), note))

    # Our whole extractor on the same library (no FinaleToolkit equivalent in one command), for scale.
    print("timing the full extractor ...", flush=True)
    ext = fm.FragmentomicsExtractor()

    def our_all() -> dict[str, float]:
        frags = read_fragments(p["frag"], min_mapq=20)
        return ext.features(frags, fm.BinGrid.from_sizes(sizes, ext.bin_size), fm.ReferenceGenome(p["fasta"]))

    w_all, c_all, feats = time_ours(our_all, r)

    load = os.getloadavg()
    lines = [
        "### cfDNA fragmentomics vs FinaleToolkit",
        "",
        f"`bench/bench_fragments.py`, {datetime.now(UTC):%Y-%m-%d}: {args.fragments:,} simulated fragments on "
        f"the synthetic genome (24 Mb, BGZF + tabix); {ftv} CLI vs omics-risk (numpy + numba, Python "
        f"{platform.python_version()}), both single worker (pyarrow limited to one thread), run alternately {r} "
        f"times, medians; {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} at the end of the run "
        "(a shared machine: CPU seconds are the steadier measure). Our end-to-end times include reading and "
        f"parsing the file, as each FinaleToolkit command does: `read_fragments` alone takes {read_w:.2f} s wall "
        f"({read_c:.2f} s CPU). FinaleToolkit start-up (a 10-fragment file): {startup[0]:.2f} s wall "
        f"({startup[1]:.2f} s CPU).",
        "",
        "| feature | FinaleToolkit s, wall (CPU) | ours end-to-end s, wall (CPU) | FinaleToolkit fragments/s "
        "| ours fragments/s | ratio wall (CPU) | ratio w/o FT start-up, wall (CPU) | ours compute only s | output |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (fw, fc), (ow, oc), (cw, _cc, _), n, note in rows:
        lines.append(
            f"| {name} | {fw:.2f} ({fc:.2f}) | {ow:.2f} ({oc:.2f}) | {n / fw:,.0f} | {n / ow:,.0f} "
            f"| **{fw / ow:.1f}x** ({fc / oc:.1f}x) | {(fw - startup[0]) / ow:.1f}x ({(fc - startup[1]) / oc:.1f}x) "
            f"| {cw:.3f} | {note} |"
        )
    lines += [
        "",
        f"The whole `FragmentomicsExtractor` (length, 1-Mb coverage, DELFI 100 kb -> 1 Mb with GC correction, end "
        f"motifs + MDS, copy-number profile and tumour-fraction fit; {len(feats)} features) takes {w_all:.2f} s wall "
        f"({c_all:.2f} s CPU) on this library, reading included: {args.fragments / w_all:,.0f} fragments/s; "
        f"tf_estimate = {feats['tf_estimate']:.3f} (simulated: 0.200).",
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0 if all(row[-1] != "DIFFERENT" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
