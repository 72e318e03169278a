"""cfDNA fragmentomics: exact numbers on hand-made files, equality with FinaleToolkit 1.1.0, and tumour-fraction
recovery on synthetic cohorts (whose truth/ only tests may read).

FinaleToolkit is not a project dependency. The exactness test runs its CLI when ``/tmp/finale-venv/bin/finaletoolkit``
exists or ``FINALETOOLKIT`` names it (``python3 -m venv /tmp/finale-venv && /tmp/finale-venv/bin/pip install
finaletoolkit==1.1.0``); without it the same test checks numbers worked out by hand, so it never passes unchecked.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest
from one_broken import assert_only_sample_failed, clean_and_broken

from omics_risk.data.contract import load_cohort
from omics_risk.data.readers import Fragments, read_fragments
from omics_risk.features.base import SampleFailure, settings_hash
from omics_risk.features.fragmentomics import (
    BinGrid,
    FragmentomicsExtractor,
    PanelOfNormals,
    ReferenceGenome,
    bin_counts,
    copy_number_log2,
    delfi_merge,
    delfi_profile,
    end_motif_counts,
    finaletoolkit_motif_multiplicity,
    fit_tumour_fraction,
    interval_counts,
    length_features,
    length_histogram,
    motif_diversity_score,
    motif_names,
)

# --------------------------------------------------------------------------------------------------- helpers

#: The hand-made library: (chrom, start, end, mapq, strand). With MAPQ >= 30 and 50-350 bp, the 3rd (MAPQ 10) and
#: 4th (10 bp) fragments drop out; chrC is not in the chromosome sizes.
HAND_FRAGMENTS = [
    ("chrA", 0, 100, 60, "+"),  # 100 bp, midpoint 50
    ("chrA", 90, 250, 60, "-"),  # 160 bp, midpoint 170
    ("chrA", 150, 300, 10, "+"),  # MAPQ 10
    ("chrA", 195, 205, 60, "+"),  # 10 bp
    ("chrA", 199, 349, 35, "-"),  # 150 bp, midpoint 274
    ("chrA", 850, 1000, 60, "+"),  # 150 bp, midpoint 925
    ("chrB", 0, 167, 60, "-"),  # 167 bp, midpoint 83
    ("chrB", 100, 267, 60, "+"),  # 167 bp, midpoint 183
    ("chrB", 300, 400, 60, "+"),  # 100 bp, midpoint 350
    ("chrB", 400, 480, 30, "+"),  # 80 bp, midpoint 440
    ("chrC", 0, 200, 60, "+"),  # 200 bp, midpoint 100, chromosome without a size
]
HAND_SIZES = {"chrA": 1000, "chrB": 500}
#: Lengths passing MAPQ >= 30 and 50-350 bp, sorted.
HAND_LENGTHS = [80, 100, 100, 150, 150, 160, 167, 167, 200]
#: Fragments per 100-bp bin (chrA bins 0-9, then chrB bins 0-4), worked out from the list above.
HAND_MIDPOINT = [*[1, 1, 1, 0, 0, 0, 0, 0, 0, 1], *[1, 1, 0, 1, 1]]
HAND_ANY = [*[2, 2, 2, 1, 0, 0, 0, 0, 1, 1], *[1, 2, 1, 1, 1]]


def write_frag_file(path: Path, rows: list[tuple[str, int, int, int, str]], sizes: dict[str, int]) -> Path:
    """A sorted BGZF BED3+2 fragment file with a tabix index (what FinaleToolkit reads)."""
    order = {c: i for i, c in enumerate([*sizes, *sorted({r[0] for r in rows} - set(sizes))])}
    rows = sorted(rows, key=lambda r: (order[r[0]], r[1], r[2]))
    plain = path.with_suffix("")
    plain.write_text("".join(f"{c}\t{s}\t{e}\t{q}\t{st}\n" for c, s, e, q, st in rows))
    pysam.tabix_index(str(plain), preset="bed", force=True)
    return path


def write_fasta(path: Path, seqs: dict[str, str]) -> Path:
    path.write_text("".join(f">{c}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                            for c, s in seqs.items()))  # fmt: skip
    pysam.faidx(str(path))
    return path


def revcomp(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGTacgt", "TGCAtgca"))


def string_motifs(rows: list[tuple[str, int, int, int, str]], seqs: dict[str, str], k: int = 4) -> dict[str, int]:
    """Reference end-motif counts with plain string slicing, one fragment at a time (FinaleToolkit's way)."""
    out: dict[str, int] = {}
    for chrom, s, e, *_ in rows:
        if chrom not in seqs:
            continue
        seq = seqs[chrom].upper()
        for kmer in (seq[s : s + k] if s + k <= len(seq) else "", revcomp(seq[e - k : e]) if e - k >= 0 else ""):
            if len(kmer) == k and set(kmer) <= set("ACGT"):
                out[kmer] = out.get(kmer, 0) + 1
    return out


def random_library(rng: np.random.Generator, sizes: dict[str, int], n: int) -> list[tuple[str, int, int, int, str]]:
    """Fragments of 20-500 bp anywhere on the chromosomes (including their very ends), MAPQ 0-60."""
    names = list(sizes)
    p = np.asarray([sizes[c] for c in names], float)
    chrom = rng.choice(len(names), size=n, p=p / p.sum())
    length = np.where(rng.random(n) < 0.9, rng.normal(167, 25, n), rng.integers(20, 500, n)).astype(int).clip(20, 500)
    size = np.asarray([sizes[names[c]] for c in chrom])
    start = (rng.random(n) * (size - length + 1)).astype(int)
    start[:3] = 0  # fragments touching the chromosome start and end
    start[3:6] = size[3:6] - length[3:6]
    mapq = np.where(rng.random(n) < 0.8, 60, rng.integers(0, 60, n))
    strand = rng.choice(["+", "-"], n)
    return [(names[c], int(s), int(s + ln), int(q), str(st))
            for c, s, ln, q, st in zip(chrom, start, length, mapq, strand, strict=True)]  # fmt: skip


def random_genome(rng: np.random.Generator, sizes: dict[str, int]) -> dict[str, str]:
    """Random sequence with soft-masked (lower-case) stretches and N runs, as real references have."""
    seqs = {}
    for c, n in sizes.items():
        s = np.array(list("ACGT"))[rng.integers(0, 4, n)]
        for a in rng.integers(0, n - 2000, 5):
            s[a : a + int(rng.integers(10, 1500))] = "N"
        for a in rng.integers(0, n - 5000, 5):
            s[a : a + 3000] = np.char.lower(s[a : a + 3000])
        seqs[c] = "".join(s)
    return seqs


def finaletoolkit_cli() -> Path | None:
    """The FinaleToolkit CLI to compare against: ``$FINALETOOLKIT`` (must exist) or the default venv, else None."""
    env = os.environ.get("FINALETOOLKIT")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"FINALETOOLKIT={env} does not exist")
        return Path(env)
    default = Path("/tmp/finale-venv/bin/finaletoolkit")
    return default if default.is_file() else None


def run_ft(cli: Path, *args: str | Path) -> None:
    subprocess.run([str(cli), *map(str, args)], check=True, capture_output=True,
                   text=True, encoding="utf-8", timeout=300)


@pytest.fixture
def hand_file(tmp_path: Path) -> Path:
    return write_frag_file(tmp_path / "hand.frag.gz", HAND_FRAGMENTS, HAND_SIZES)


# --------------------------------------------------------------------------------------------------- by hand


def test_length_histogram_and_features_by_hand(hand_file: Path) -> None:
    frags = read_fragments(hand_file, min_mapq=30, min_length=50, max_length=350)
    assert sorted(frags.lengths.tolist()) == HAND_LENGTHS
    hist = length_histogram(frags.lengths, 50, 350)
    assert hist.shape == (301,)
    assert {50 + i: int(v) for i, v in enumerate(hist) if v} == {80: 1, 100: 2, 150: 2, 160: 1, 167: 2, 200: 1}
    f = length_features(hist, 50, bin_width=50)
    assert f["len_mean"] == pytest.approx(1274 / 9)
    assert f["len_median"] == 150.0  # 5th of 9
    assert f["len_sd"] == pytest.approx(np.std(HAND_LENGTHS))
    assert f["len_mode"] == 100.0  # 100, 150 and 167 occur twice: the shortest wins
    assert f["len_s150"] == pytest.approx(5 / 9)
    assert f["len_short_100_150"] == pytest.approx(4 / 9)
    assert f["len_short_long_ratio"] == 1.0  # 4 short (100-150) and 4 long (151-220)
    bins = {k: v for k, v in f.items() if k.startswith("len_bin_")}
    assert list(bins) == ["len_bin_50_100", "len_bin_100_150", "len_bin_150_200", "len_bin_200_250",
                          "len_bin_250_300", "len_bin_300_350"]  # fmt: skip
    assert [round(v * 9) for v in bins.values()] == [1, 2, 5, 1, 0, 0]
    # Even count: the mean of the two middle lengths.
    assert length_features(length_histogram(np.array([100, 120, 130, 200]), 50, 350))["len_median"] == 125.0


def test_coverage_by_hand(hand_file: Path) -> None:
    frags = read_fragments(hand_file).filter(min_mapq=30, min_length=50, max_length=350)
    grid = BinGrid.from_sizes(HAND_SIZES, 100)
    assert grid.n_bins == 15
    assert bin_counts(frags, grid, "midpoint").tolist() == HAND_MIDPOINT
    assert bin_counts(frags, grid, "any").tolist() == HAND_ANY
    bed = grid.to_frame()
    for policy, expected in (("midpoint", HAND_MIDPOINT), ("any", HAND_ANY)):
        got = interval_counts(frags, bed["chrom"].tolist(), bed["start"].to_numpy(), bed["end"].to_numpy(), policy)
        assert got.tolist() == expected
    # Overlapping, unsorted intervals and a chromosome without fragments.
    got = interval_counts(
        frags, ["chrB", "chrA", "chrA", "chrZ"], np.array([0, 0, 100, 0]), np.array([500, 1000, 275, 9])
    )
    assert got.tolist() == [4, 4, 2, 0]
    got = interval_counts(frags, ["chrA", "chrA"], np.array([100, 999]), np.array([275, 1000]), "any")
    assert got.tolist() == [2, 1]
    assert grid.labels("cov")[:2] == ["cov_chrA_0", "cov_chrA_1"] and grid.labels("cov")[-1] == "cov_chrB_4"


def test_merged_tail_bins() -> None:
    grid = BinGrid.from_sizes({"chrA": 1000, "chrB": 1100, "chrC": 120}, 300, merge_tail=0.5)
    bins = grid.to_frame()
    assert bins.values.tolist() == [
        ["chrA", 0, 300], ["chrA", 300, 600], ["chrA", 600, 1000],  # a 100-bp tail joins the bin before
        ["chrB", 0, 300], ["chrB", 300, 600], ["chrB", 600, 900], ["chrB", 900, 1100],  # 200 bp: kept
        ["chrC", 0, 120],  # a chromosome shorter than one bin keeps its only bin
    ]  # fmt: skip
    frags = Fragments(np.array([0, 0, 0, 1, 2], np.int32), ["chrA", "chrB", "chrC"], np.array([850, 590, 560, 1000, 0]),
                      np.array([1000, 950, 700, 1100, 100]), np.full(5, 60, np.int16), np.ones(5, np.int8))  # fmt: skip
    assert bin_counts(frags, grid, "midpoint").tolist() == [0, 0, 3, 0, 0, 0, 1, 1]
    assert bin_counts(frags, grid, "any").tolist() == [0, 2, 3, 0, 0, 0, 1, 1]
    fine = grid.with_bin_size(100, merge_tail=0.0)
    assert fine.n_bins == 10 + 11 + 2
    assert np.bincount(fine.coarse_map(grid), minlength=grid.n_bins).tolist() == [3, 3, 4, 3, 3, 3, 2, 2]
    coarse = np.bincount(fine.coarse_map(grid), weights=bin_counts(frags, fine), minlength=grid.n_bins)
    assert coarse.tolist() == bin_counts(frags, grid).tolist()


def test_bin_and_interval_counts_agree_on_random_data() -> None:
    rng = np.random.default_rng(3)
    sizes = {"chr1": 10_007, "chr2": 5_000}
    rows = random_library(rng, sizes, 3000)
    frags = Fragments(
        np.array([0 if r[0] == "chr1" else 1 for r in rows], np.int32), ["chr1", "chr2"],
        np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), np.full(len(rows), 60, np.int16),
        np.ones(len(rows), np.int8),
    )  # fmt: skip
    grid = BinGrid.from_sizes(sizes, 700)
    bed = grid.to_frame()
    for policy in ("midpoint", "any"):
        ours = bin_counts(frags, grid, policy)
        ref = interval_counts(frags, bed["chrom"].tolist(), bed["start"].to_numpy(), bed["end"].to_numpy(), policy)
        assert np.array_equal(ours, ref)
        # Brute force on the first bins.
        mid = (frags.start + frags.end) // 2
        for b in range(5):
            s, e = int(bed.start[b]), int(bed.end[b])
            on = frags.chrom == 0
            brute = (
                (on & (mid >= s) & (mid < e)) if policy == "midpoint" else (on & (frags.start < e) & (frags.end > s))
            )
            assert ours[b] == brute.sum()
    assert bin_counts(frags, grid, "midpoint").sum() == len(frags)


def test_end_motifs_by_hand(tmp_path: Path) -> None:
    #                 0         1         2
    #                 0123456789012345678901234
    seqs = {"chrM": "ACGTAACCGGTTNACGTacgtTTGCA"}
    fasta = ReferenceGenome(write_fasta(tmp_path / "m.fa", seqs))
    rows = [
        ("chrM", 0, 12, 60, "+"),  # ACGT at start; end GGTT -> AACC
        ("chrM", 5, 14, 60, "-"),  # ACCG at start; end TNAC holds an N: skipped
        ("chrM", 13, 26, 60, "-"),  # ACGT; soft-masked bases count: end TGCA -> TGCA
        ("chrX", 0, 10, 60, "+"),  # no such sequence: ignored
    ]
    frags = read_fragments(write_frag_file(tmp_path / "m.frag.gz", rows, {"chrM": 26}))
    counts = end_motif_counts(frags, fasta)
    names = motif_names(4)
    got = {names[i]: int(c) for i, c in enumerate(counts) if c}
    assert got == {"ACGT": 2, "AACC": 1, "ACCG": 1, "TGCA": 1}
    assert got == string_motifs(rows, seqs)
    strand = end_motif_counts(frags, fasta, ends="strand")  # + -> start k-mer, - -> end k-mer
    assert {names[i]: int(c) for i, c in enumerate(strand) if c} == {"ACGT": 1, "TGCA": 1}
    assert names[:3] == ["AAAA", "AAAC", "AAAG"] and names[-1] == "TTTT" and len(names) == 256
    assert motif_diversity_score(np.ones(256)) == pytest.approx(1.0)
    assert motif_diversity_score(np.eye(256)[7] * 50) == 0.0
    assert motif_diversity_score(np.array([1, 1] + [0] * 254)) == pytest.approx(np.log(2) / np.log(256))


def test_end_motifs_random_library_match_string_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    sizes = {"chr1": 30_000, "chr2": 12_345}
    seqs = random_genome(rng, sizes)
    rows = random_library(rng, sizes, 4000)
    fasta = ReferenceGenome(write_fasta(tmp_path / "g.fa", seqs))
    frags = read_fragments(write_frag_file(tmp_path / "g.frag.gz", rows, sizes))
    counts = end_motif_counts(frags, fasta)
    names = motif_names(4)
    assert {names[i]: int(c) for i, c in enumerate(counts) if c} == string_motifs(rows, seqs)


def test_periodicity_amplitude_recovers_a_known_oscillation() -> None:
    x = np.arange(50, 351)
    smooth = 1e5 * np.exp(-0.5 * ((x - 167) / 40) ** 2) + 2e3
    wave = 1 + 0.3 * np.cos(2 * np.pi * (x - 167) / 10.4) * (x < 143)
    f = length_features(np.round(smooth * wave).astype(np.int64), 50)
    assert f["len_period10_amp"] == pytest.approx(0.3, abs=0.04)
    flat = length_features(np.round(smooth).astype(np.int64), 50)
    assert flat["len_period10_amp"] < 0.02


# --------------------------------------------------------------------------------------------------- FinaleToolkit


@pytest.mark.slow
def test_matches_finaletoolkit(tmp_path: Path, hand_file: Path) -> None:
    """Length histogram and coverage equal FinaleToolkit's (midpoint and any policies, normalised or not); end
    motifs equal it once its double counting of window-crossing fragments is replayed. Without FinaleToolkit,
    the hand-made file's histogram and coverage are checked against the numbers worked out by hand."""
    cli = finaletoolkit_cli()
    hand = read_fragments(hand_file).filter(min_mapq=30, min_length=50, max_length=350)
    hist = length_histogram(hand.lengths, 50, 350)
    grid = BinGrid.from_sizes(HAND_SIZES, 100)
    if cli is None:
        assert [int(hist[n - 50]) for n in sorted(set(HAND_LENGTHS))] == [1, 2, 2, 1, 2, 1]
        assert bin_counts(hand, grid, "midpoint").tolist() == HAND_MIDPOINT
        assert bin_counts(hand, grid, "any").tolist() == HAND_ANY
        return

    # The hand-made file, then a random library with window-crossing fragments, N runs and soft-masking.
    rng = np.random.default_rng(5)
    sizes = {"chr1": 2_300_007, "chr2": 1_000_000, "chr3": 654_321}  # chr2: a whole number of FinaleToolkit windows
    seqs = random_genome(rng, sizes)
    fasta_path = write_fasta(tmp_path / "genome.fa", seqs)
    big = write_frag_file(tmp_path / "lib.frag.gz", random_library(rng, sizes, 30_000), sizes)
    cases = [(hand_file, HAND_SIZES, 100), (big, sizes, 100_000)]
    for path, csizes, bin_size in cases:
        frags = read_fragments(path)
        g = BinGrid.from_sizes(csizes, bin_size)
        bed = tmp_path / f"{path.stem}.bins.bed"
        b = g.to_frame()
        b["name"] = "."
        b.to_csv(bed, sep="\t", header=False, index=False)

        out = tmp_path / f"{path.stem}.flb.tsv"
        run_ft(cli, "frag-length-bins", path, "--min-length", 50, "--max-length", 350, "-q", 30, "-o", out)
        ft = pd.read_csv(out, sep="\t", comment="#")
        sel = frags.filter(min_mapq=30, min_length=50, max_length=350)
        ours = length_histogram(sel.lengths, 50, 350)
        assert np.array_equal(ours[ft["min"].to_numpy() - 50], ft["count"].to_numpy())
        assert ours.sum() == ft["count"].sum()

        for policy in ("midpoint", "any"):
            out = tmp_path / f"{path.stem}.{policy}.bed"
            run_ft(cli, "coverage", path, bed, "-p", policy, "-q", 30, "-o", out)
            ft = pd.read_csv(out, sep="\t", header=None)
            ft_counts = ft[4].to_numpy().astype(np.int64)
            assert np.array_equal(bin_counts(frags.filter(min_mapq=30), g, policy), ft_counts)
            if path == hand_file:  # FinaleToolkit agrees with the hand-made numbers (length filter aside)
                sel = frags.filter(min_mapq=30, min_length=50, max_length=350)
                assert bin_counts(sel, g, policy).tolist() == (HAND_MIDPOINT if policy == "midpoint" else HAND_ANY)
        # Per million, with a length window (FinaleToolkit divides by the genome-wide count).
        out = tmp_path / f"{path.stem}.norm.bed"
        run_ft(cli, "coverage", path, bed, "-n", "--scale-factor", 1e6, "--min-length", 100, "--max-length", 220,
               "-q", 20, "-o", out)  # fmt: skip
        ft = pd.read_csv(out, sep="\t", header=None)
        sel = frags.filter(min_mapq=20, min_length=100, max_length=220)
        np.testing.assert_allclose(bin_counts(sel, g) * 1e6 / len(sel), ft[4].to_numpy(), rtol=1e-12)

    # End motifs: FinaleToolkit 1.1.0 counts a fragment once per 1-Mb window it overlaps and ignores --min-length.
    out = tmp_path / "motifs.tsv"
    run_ft(cli, "end-motifs", big, fasta_path, "-k", 4, "-q", 20, "--min-length", 50, "-o", out)
    ft = pd.read_csv(out, sep="\t", header=None, names=["kmer", "freq"])
    assert ft["kmer"].tolist() == motif_names(4)
    frags = read_fragments(big, min_mapq=20)
    fasta = ReferenceGenome(fasta_path)
    mult = finaletoolkit_motif_multiplicity(frags, sizes)
    assert (mult > 1).sum() > 0 and (mult == 0).sum() > 0  # chr2's only window is empty in FinaleToolkit
    replay = end_motif_counts(frags.select(np.repeat(np.arange(len(frags)), mult)), fasta)
    np.testing.assert_allclose(replay / replay.sum(), ft["freq"].to_numpy(), rtol=1e-12, atol=1e-15)
    ours = end_motif_counts(frags.filter(min_length=50), fasta)
    assert np.abs(ours / ours.sum() - ft["freq"].to_numpy()).max() < 2e-3


# --------------------------------------------------------------------------------------------------- DELFI, CNA


def _synthetic_bins(gc: np.ndarray, short: np.ndarray, long: np.ndarray, bin_size: int = 1000) -> Fragments:
    """Fragments placed so that bin i holds short[i] fragments of 120 bp and long[i] of 180 bp."""
    starts, lengths = [], []
    for i, (s, lo) in enumerate(zip(short, long, strict=True)):
        starts += [i * bin_size + 300] * (s + lo)
        lengths += [120] * s + [180] * lo
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    n = len(starts)
    return Fragments(np.zeros(n, np.int32), ["chr1"], starts, starts + lengths, np.full(n, 60, np.int16),
                     np.ones(n, np.int8))  # fmt: skip


def test_delfi_gc_correction_flattens_a_gc_trend() -> None:
    rng = np.random.default_rng(0)
    n = 200
    gc = rng.uniform(0.3, 0.6, n)
    short = np.round(100 * (1 + 3 * (gc - 0.45))).astype(int)  # GC-biased short counts
    long = np.full(n, 200)
    long[:8] = 5  # low-coverage bins: trimmed
    frags = _synthetic_bins(gc, short, long)
    grid = BinGrid.from_sizes({"chr1": n * 1000}, 1000)
    prof = delfi_profile(frags, grid, gc=gc, trim_percentile=10)
    assert prof["short"].tolist() == short.tolist() and prof["long"].tolist() == long.tolist()
    assert not prof["valid"][:8].any() and prof["short_corrected"][:8].isna().all()
    valid = prof["valid"].to_numpy()
    corrected = prof["short_corrected"].to_numpy()[valid]
    assert np.std(short[valid]) > 10 and np.std(corrected) < 1.5
    assert np.median(corrected) == pytest.approx(np.median(short[valid]), abs=1.5)
    coarse = grid.with_bin_size(20_000)
    ratio = delfi_merge(prof, grid, coarse)
    assert ratio.shape == (10,) and np.isfinite(ratio).all()
    np.testing.assert_allclose(ratio, np.median(short[valid]) / 200, rtol=0.02)
    raw = delfi_profile(frags, grid, trim_percentile=10)  # without GC: the raw ratio
    np.testing.assert_allclose(raw["ratio_corrected"][valid], short[valid] / 200)


def test_copy_number_log2_normalises_bin_size_and_gc() -> None:
    rng = np.random.default_rng(1)
    gc = rng.uniform(0.35, 0.55, 300)
    bases = np.full(300, 1e5)
    bases[[10, 50]] = 6e4  # short last bins hold fewer fragments
    counts = rng.poisson(2000 * np.exp(2.0 * (gc - 0.45)) * bases / 1e5)
    counts[200:260] = rng.poisson(1.5 * 2000 * np.exp(2.0 * (gc[200:260] - 0.45)))  # a gain
    log2 = copy_number_log2(counts, bases, gc=gc, min_bases=5e4)
    assert abs(np.nanmedian(log2)) < 1e-9
    assert np.nanstd(np.delete(log2, np.r_[200:260])) < 0.05  # Poisson only (sd ~ 0.032)
    assert np.nanmean(log2[200:260]) == pytest.approx(np.log2(1.5), abs=0.05)
    panel = np.zeros(300)
    panel[:100] = 0.2
    shifted = copy_number_log2(counts, bases, gc=gc, panel=panel)
    assert np.nanmedian(shifted[:100]) == pytest.approx(-0.2, abs=0.03)


@pytest.mark.parametrize("tf", [0.0, 0.05, 0.2, 0.6])
def test_fit_tumour_fraction_on_a_simulated_profile(tf: float) -> None:
    rng = np.random.default_rng(int(tf * 100))
    chrom = np.repeat(np.arange(20), 15)
    states = np.full(len(chrom), 2)
    for c, state in zip(rng.choice(20, 8, replace=False), [1, 1, 1, 3, 3, 4, 1, 3], strict=True):
        states[(chrom == c) & (np.arange(len(chrom)) % 15 >= 5)] = state
    ratio = (1 - tf) + tf * states / np.mean(states)
    log2 = np.log2(ratio) + rng.standard_t(6, len(chrom)) * 0.06
    log2 -= np.median(log2)
    fit = fit_tumour_fraction(log2, chrom)
    assert fit.tumour_fraction == pytest.approx(tf, abs=0.03)
    if tf >= 0.2:
        assert np.mean(fit.states == states) > 0.9
        assert 1.8 < fit.ploidy < 2.4
    empty = fit_tumour_fraction(np.full(5, np.nan), np.zeros(5))
    assert np.isnan(empty.tumour_fraction) and (empty.states == -1).all()


def test_panel_of_normals_roundtrip(tmp_path: Path) -> None:
    grid = BinGrid.from_sizes({"chr1": 1050, "chr2": 300}, 100)
    rng = np.random.default_rng(2)
    profiles = [rng.normal(0, 0.1, grid.n_bins) for _ in range(5)]
    profiles[0][3] = np.nan
    for p in profiles[1:4]:
        p[7] = np.nan  # missing in 3 of 5: dropped
    pon = PanelOfNormals.build(profiles, grid)
    assert np.isfinite(pon.log2[3]) and np.isnan(pon.log2[7])
    assert pon.log2[0] == pytest.approx(np.median([p[0] for p in profiles]))
    back = PanelOfNormals.load(pon.save(tmp_path / "pon.tsv"))
    assert back.grid == grid and back.n_samples == 5
    np.testing.assert_allclose(back.log2, pon.log2, atol=1e-6, equal_nan=True)
    other = BinGrid.from_sizes({"chr2": 300, "chr3": 500}, 100)
    on = back.on(other)
    np.testing.assert_allclose(on[:3], pon.log2[11:14], atol=1e-6)
    assert np.isnan(on[3:]).all()
    with pytest.raises(ValueError, match="bin"):
        back.on(other.with_bin_size(50))


# --------------------------------------------------------------------------------------------------- extractor


def test_extractor_on_the_tiny_cohort(valid_cohort: Path) -> None:
    cohort = load_cohort(valid_cohort)
    ext = FragmentomicsExtractor(bin_size=1000, coarse_bin_size=5000, cna_bin_size=1000)
    assert set(ext.references(cohort)) == {"genome_fasta", "chrom_sizes"}
    ext2 = pickle.loads(pickle.dumps(ext))
    assert settings_hash(ext2.settings()) == settings_hash(ext.settings())
    samples = cohort.samples_of("cfdna")
    results = {s.sample_id: ext.extract_sample(cohort, s) for _, s in samples.iterrows()}
    names = [list(r) for r in results.values()]
    assert all(n == names[0] for n in names)  # the BAM gives the same names as the fragment files
    first = names[0]
    assert first[:5] == ["len_mean", "len_median", "len_sd", "len_mode", "len_s150"]
    assert "cov_chr1_3" in first and "cov_chr2_1" in first and "cov_chr2_2" not in first  # 12 kb: 2 kb tail merged
    assert "delfi_ratio_chr1_3" in first and "motif_CCCA" in first and "mds" in first
    assert "tf_estimate" in first and "cna_log2_chr2" in first and "cna_fga" in first
    assert len([n for n in first if n.startswith("motif_")]) == 256
    assert all(isinstance(v, float) for r in results.values() for v in r.values())
    again = ext2.extract_sample(cohort, samples.iloc[0])
    assert again.keys() == results[samples.iloc[0].sample_id].keys()
    np.testing.assert_array_equal(list(again.values()), list(results[samples.iloc[0].sample_id].values()))
    bam = results["P03-cfdna-postop1"]  # the BAM's fragments: 166, 180 and 150 bp (conftest.BAM_READS)
    assert bam["len_mean"] == pytest.approx((166 + 180 + 150) / 3)
    cov = [v for k, v in bam.items() if k.startswith("cov_")]
    assert sum(cov) == pytest.approx(1e6)

    only = FragmentomicsExtractor(groups=["length", "motif"], kmer=3)
    feats = only.extract_sample(cohort, samples.iloc[0])
    assert len([k for k in feats if k.startswith("motif_")]) == 64 and not any(k.startswith("cov_") for k in feats)


def test_extractor_without_references_and_failures(valid_cohort: Path) -> None:
    yaml = valid_cohort / "cohort.yaml"
    yaml.write_text(yaml.read_text().split("references:")[0])
    cohort = load_cohort(valid_cohort)
    ext = FragmentomicsExtractor(bin_size=1000, coarse_bin_size=5000, cna_bin_size=1000)
    assert ext.references(cohort) == {}
    feats = ext.extract_sample(cohort, cohort.samples_of("cfdna").iloc[0])
    assert not any(k.startswith("motif_") for k in feats) and "mds" not in feats
    assert "delfi_ratio_chr1_0" in feats and "cov_chr1_0" in feats  # bins from each chromosome's last fragment

    strict = FragmentomicsExtractor(min_mapq=70)
    with pytest.raises(SampleFailure, match="MAPQ"):
        strict.extract_sample(cohort, cohort.samples_of("cfdna").iloc[0])
    other = FragmentomicsExtractor(chroms=["chrX"])
    with pytest.raises(SampleFailure, match="chromosome"):
        other.extract_sample(cohort, cohort.samples_of("cfdna").iloc[0])
    broken = cohort.samples_of("cfdna").iloc[0].copy()
    (valid_cohort / broken["path"]).write_bytes(b"chr1\t10\n")
    with pytest.raises(SampleFailure, match="column"):
        ext.extract_sample(cohort, broken)
    with pytest.raises(ValueError, match="unknown feature group"):
        FragmentomicsExtractor(groups=["lengths"])
    with pytest.raises(ValueError, match="multiple"):
        FragmentomicsExtractor(bin_size=300, coarse_bin_size=1000)


def _bad_line(root: Path, rel: str = "cfdna/P02_postop1.frag.tsv.gz") -> None:
    """Line 4 of one fragment file (after its comment line) ends before it starts."""
    lines = gzip.decompress((root / rel).read_bytes()).decode().splitlines()
    lines[3] = "chr1\t500\t400\t60\t+"
    (root / rel).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def test_one_broken_sample_fails_only_itself(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clean, broken, summary = clean_and_broken(make_valid_cohort, tmp_path, "cfdna", _bad_line)  # default extractor
    assert_only_sample_failed(clean, broken, "cfdna", "P02-cfdna-postop1",
                              ("cfdna/P02_postop1.frag.tsv.gz:4 [end]: end (400) must be greater than start (500)",))
    assert summary.modalities["cfdna"]["ok"] == 3


def test_panel_of_normals_leaves_out_a_broken_library(valid_cohort: Path) -> None:
    ext = FragmentomicsExtractor(bin_size=1000, coarse_bin_size=5000, cna_bin_size=1000)
    good = ["P01-cfdna-preop", "P01-cfdna-postop1"]
    reference = ext.build_panel_of_normals(load_cohort(valid_cohort), good)
    _bad_line(valid_cohort)
    cohort = load_cohort(valid_cohort)
    with pytest.warns(UserWarning, match="built from 2 of 3 libraries; left out: P02-cfdna-postop1: "):
        pon = ext.build_panel_of_normals(cohort, [*good, "P02-cfdna-postop1"])
    assert pon.n_samples == 2 and list(pon.skipped) == ["P02-cfdna-postop1"]
    assert "P02_postop1.frag.tsv.gz:4 [end]" in pon.skipped["P02-cfdna-postop1"]
    np.testing.assert_array_equal(pon.log2, reference.log2)
    with pytest.raises(ValueError, match=r"needs at least 3 usable normal librar\(ies\); 2 of the 3 given are usable "
                                         r"\(left out: P02-cfdna-postop1: .*P02_postop1.frag.tsv.gz:4 \[end\]"):
        ext.build_panel_of_normals(cohort, [*good, "P02-cfdna-postop1"], min_samples=3)
    with pytest.raises(ValueError, match="0 of the 1 given are usable"):
        ext.build_panel_of_normals(cohort, ["P02-cfdna-postop1"])


# --------------------------------------------------------------------------------------------------- synthetic truth


@pytest.fixture(scope="session")
def synthetic_cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An SCLC cohort (high tumour fractions) and an NSCLC post-operative one (mostly tumour-free), 80k fragments."""
    from omics_risk.data.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("frag_synth")
    return {
        "sclc": generate_cohort("sclc", n=40, seed=7, out=base / "sclc", ct_shape=(8, 8, 8), n_metabolites=20,
                                workers=2, progress=False),
        "postop": generate_cohort("nsclc-postop", n=30, seed=8, out=base / "postop", ct_shape=(8, 8, 8),
                                  n_metabolites=20, workers=2, progress=False),
    }  # fmt: skip


def _tf_table(root: Path, ext: FragmentomicsExtractor) -> pd.DataFrame:
    cohort = load_cohort(root)
    truth = pd.read_csv(root / "truth" / "samples.csv").set_index("sample_id")["tumour_fraction"]
    rows = [{"sample_id": s.sample_id, "true": truth[s.sample_id], **ext.extract_sample(cohort, s)}
            for _, s in cohort.samples_of("cfdna").iterrows()]  # fmt: skip
    return pd.DataFrame(rows).set_index("sample_id")


@pytest.mark.slow
def test_tumour_fraction_tracks_the_synthetic_truth(synthetic_cohorts: dict[str, Path], tmp_path: Path) -> None:
    ext = FragmentomicsExtractor(groups=["cna"])
    sclc = _tf_table(synthetic_cohorts["sclc"], ext)
    hi = sclc[sclc["true"] >= 0.03]
    assert len(hi) >= 20
    r = np.corrcoef(hi["true"], hi["tf_estimate"])[0, 1]
    assert r >= 0.9, f"r = {r:.3f} where the true fraction >= 3 %"
    assert (hi["tf_estimate"] - hi["true"]).abs().median() < 0.05
    assert hi["cna_fga"].corr(hi["true"], method="spearman") > 0.3
    low = sclc[sclc["true"] < 0.01]
    assert len(low) >= 3 and low["tf_estimate"].median() < 0.03

    # A panel of normals from the tumour-free libraries of another cohort (same genome) removes shared bin effects.
    postop = _tf_table(synthetic_cohorts["postop"], ext)
    free = postop[postop["true"] < 0.005]
    pon = ext.build_panel_of_normals(load_cohort(synthetic_cohorts["postop"]), free.index)
    assert pon.n_samples == len(free) and np.isfinite(pon.log2).mean() > 0.8
    path = pon.save(tmp_path / "pon.tsv")
    with_pon = _tf_table(synthetic_cohorts["sclc"], FragmentomicsExtractor(groups=["cna"], panel_of_normals=str(path)))
    hi2 = with_pon.loc[hi.index]
    r2 = np.corrcoef(hi2["true"], hi2["tf_estimate"])[0, 1]
    assert r2 >= 0.9, f"r = {r2:.3f} with a panel of normals"
    assert with_pon["cna_noise"].median() < 0.85 * sclc["cna_noise"].median()

    # Post-operative NSCLC: mostly tumour-free, so estimates stay near zero; a 14 % library is detected without a
    # panel and measured with one (3-5 % is the detection floor here, as for ichorCNA).
    assert len(free) >= 15
    assert free["tf_estimate"].median() < 0.02 and (free["tf_estimate"] < 0.05).mean() >= 0.9
    pos = postop[postop["true"] >= 0.1]
    assert len(pos) >= 1
    assert (pos["tf_estimate"] > 0.5 * pos["true"]).all() and (pos["tf_estimate"] > free["tf_estimate"].max()).all()
    pos_pon = _tf_table(synthetic_cohorts["postop"], FragmentomicsExtractor(groups=["cna"], panel_of_normals=str(path)))
    assert ((pos_pon.loc[pos.index, "tf_estimate"] - pos["true"]).abs() < 0.05).all()


@pytest.mark.slow
def test_fragment_features_carry_the_synthetic_biology(synthetic_cohorts: dict[str, Path]) -> None:
    """Tumour DNA is shorter and has fewer C-end motifs in the simulator: the features must show it."""
    table = _tf_table(synthetic_cohorts["sclc"], FragmentomicsExtractor(groups=["length", "motif", "delfi"]))
    rho = table.corr(method="spearman")["true"]
    assert rho["len_s150"] > 0.5 and rho["len_mean"] < -0.5
    assert rho["motif_CCCA"] < -0.3
    assert 0.9 < table["mds"].min() <= table["mds"].max() < 1.0
    assert table["len_period10_amp"].between(0.05, 0.6).all()
    assert table["len_mode"].between(150, 175).all()
    delfi = table[[c for c in table if c.startswith("delfi_ratio_")]]
    assert delfi.notna().mean().mean() > 0.9
    assert delfi.mean(axis=1).corr(table["true"], method="spearman") > 0.5
