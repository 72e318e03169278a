"""Shared pieces of the fuzz tests (test_fuzz_readers.py, test_fuzz_validate.py): how inputs are mutated, the
hang watchdog, and the check that a rejection is *located* (names its file, and a line inside the file).

Why a watchdog and not a time limit: CI is a loaded 2-core machine and the project forbids wall-clock assertions,
so nothing here measures speed. An example normally takes milliseconds; the watchdog only fires after
``WATCHDOG_BASE_S`` + ``WATCHDOG_PER_KB_S`` per KB of input (a minute and more for inputs of a few KB), far
beyond anything load can cause, so it catches runaway behaviour (an endless loop, a quadratic blow-up on a
crafted line) and nothing else. It raises :class:`PossibleHang` from a SIGALRM handler in the main thread, and
``faulthandler`` dumps every thread's stack at the same moment, so a hang inside C code (zlib, pyarrow, ITK),
where the Python handler cannot run until the call returns, still says where it is stuck.
"""

from __future__ import annotations

import faulthandler
import gzip
import os
import re
import signal
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Seconds an example may run before the watchdog calls it a possible hang, plus this many per KB of input.
WATCHDOG_BASE_S = 60.0
WATCHDOG_PER_KB_S = 1.0
#: ``OMICS_RISK_FUZZ_SCALE=10`` runs ten times the examples (a deeper local run); CI uses the default 1.
FUZZ_SCALE = float(os.environ.get("OMICS_RISK_FUZZ_SCALE", "1"))
#: ``OMICS_RISK_FUZZ_RANDOM=1`` draws new examples on each run (with pytest's ``--hypothesis-seed=N`` to replay one)
#: instead of CI's fixed ones: for hunting bugs locally, never for CI.
FUZZ_RANDOM = os.environ.get("OMICS_RISK_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible settings: derandomized (CI sees the same examples every run), no example database on disk,
    no per-example deadline (speed is not what these tests check; see the watchdog)."""
    return settings(
        max_examples=max(1, round(max_examples * FUZZ_SCALE)),
        deadline=None,
        derandomize=not FUZZ_RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class PossibleHang(BaseException):
    """Raised by the watchdog; a BaseException so that no reader's ``except Exception`` can swallow it."""


@contextmanager
def watchdog(n_bytes: int, what: str) -> Iterator[None]:
    """Fail with 'possible hang' if the body runs past a generous, input-size-proportional budget (see module doc)."""
    limit = WATCHDOG_BASE_S + WATCHDOG_PER_KB_S * n_bytes / 1024
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield  # no SIGALRM here (Windows, or a worker thread): run unguarded rather than not at all
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise PossibleHang(
            f"possible hang: {what} still running after {limit:.0f} s on a {n_bytes}-byte input "
            "(normal examples take milliseconds); see the stack dump above"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    faulthandler.dump_traceback_later(limit, exit=False)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------- content


def gunzip_or_raw(data: bytes) -> bytes:
    """What a reader sees as text: the decompressed content of a (multi-member) gzip file, else the bytes."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return data


def line_count(data: bytes) -> int:
    """Lines of a text as an editor counts them (``\\n``, ``\\r\\n`` or a lone ``\\r`` ends a line); at least 1."""
    parts = re.split(rb"\r\n|\r|\n", data)
    return max(1, len(parts) - (parts[-1] == b""))


def bgzf(data: bytes) -> bytes:
    """``data`` BGZF-compressed as bgzip writes it (64 KiB blocks with the BC extra field, then the EOF block)."""
    out = bytearray()
    for i in range(0, len(data), 0xFF00) if data else ():
        block = data[i : i + 0xFF00]
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = comp.compress(block) + comp.flush()
        bsize = len(payload) + 25
        out += b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00" + bsize.to_bytes(2, "little")
        out += payload + zlib.crc32(block).to_bytes(4, "little") + len(block).to_bytes(4, "little")
    return bytes(out) + bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def bam_with_broken_header_block(bam: bytes) -> bytes:
    """``bam`` re-blocked so its magic is in a valid first BGZF block and the rest of its header in a second block
    whose deflate data is invalid (reserved block type): the header read fails after the format was recognised."""
    content = gzip.decompress(bam)
    eof = len(bgzf(b""))
    rest = bgzf(content[8:])[:-eof]
    return bgzf(content[:8])[:-eof] + rest[:18] + b"\x07" + rest[19:] + bgzf(b"")


#: How fuzzed content is written to disk; gzip without a timestamp, so an example is the same bytes on every run.
WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bgzf": bgzf,
}


# --------------------------------------------------------------------------------------------------- mutations

#: Values that break naive parsers: control characters, delimiters, quotes, not-a-numbers, overflowing and
#: negative numbers, numbers Python parses but pyarrow does not, BOMs, invalid UTF-8, non-ASCII digits, emoji.
SPECIAL = [
    b"", b"\x00", b"\x01", b"\x1b", b"\x7f", b"\x0b", b"\x0c", b"\r", b"\t", b",", b";", b"\n", b'"', b"'", b"#",
    b" ", b"  ", b".", b"nan", b"NaN", b"NA", b"null", b"None", b"inf", b"-inf", b"Infinity", b"1e400", b"-1", b"-0",
    b"0", b"+5", b"1_000", b"0x10", b"1e3", b"1.5", b"-2.5", b"2147483648", b"32768", b"256", b"65536",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999999999999999",
    b"1e308", b"\xef\xbb\xbf", b"\xff\xfe", b"\xc3", b"\x80", "é".encode(), "\u2028".encode(), "\u0663".encode(),
    "\U0001f600".encode(), b"track", b"browser", b"chr1", b"chrUn_\x00", b"sample", b"qc", b"blank", b"P01", b"*",
]  # fmt: skip

special = st.sampled_from(SPECIAL)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _sep(line: bytes) -> bytes:
    return b"\t" if b"\t" in line else b","


def _flip(draw: Callable, data: bytes) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    return bytes(b)


def _truncate(draw: Callable, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def _insert(draw: Callable, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    token = draw(special | st.binary(min_size=1, max_size=16) | st.text(max_size=8).map(str.encode))
    return data[:i] + token + data[i:]


def _dup_line(draw: Callable, data: bytes) -> bytes:
    lines = _lines(data)
    src, dst = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines)))
    lines.insert(dst, lines[src])
    return b"\n".join(lines)


def _del_line(draw: Callable, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return b"\n".join(lines)


def _swap_lines(draw: Callable, data: bytes) -> bytes:
    lines = _lines(data)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _swap_fields(draw: Callable, data: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    sep = _sep(lines[i])
    fields = lines[i].split(sep)
    a, b = draw(st.integers(0, len(fields) - 1)), draw(st.integers(0, len(fields) - 1))
    fields[a], fields[b] = fields[b], fields[a]
    lines[i] = sep.join(fields)
    return b"\n".join(lines)


def _set_field(draw: Callable, data: bytes) -> bytes:
    """Replace (or extend, or add) one field of one line with a special value."""
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    sep = _sep(lines[i])
    fields = lines[i].split(sep)
    j = draw(st.integers(0, len(fields)))
    token = draw(special)
    how = draw(st.sampled_from(["replace", "append", "add"]))
    if j == len(fields) or how == "add":
        fields.insert(j, token)
    elif how == "replace":
        fields[j] = token
    else:
        fields[j] += token
    lines[i] = sep.join(fields)
    return b"\n".join(lines)


def _long_line(draw: Callable, data: bytes) -> bytes:
    lines = _lines(data)
    unit = draw(st.sampled_from([b"A", b"9", b"\t", b",", b"chr1\t", b"-", b"#", b"\xc3\xa9", b"A: ", b"1 "]))
    line = unit * draw(st.integers(200, 2000))  # teem crashed from ~1000 bytes on
    lines.insert(draw(st.integers(0, len(lines))), line)
    return b"\n".join(lines)


def _delimiters(draw: Callable, data: bytes) -> bytes:
    old, new = draw(
        st.sampled_from(
            [
                (b"\t", b","),
                (b",", b"\t"),
                (b"\t", b" "),
                (b",", b";"),
                (b"\n", b"\r\n"),
                (b"\n", b"\r"),
                (b"\n", b"\n\n"),
                (b",", b",,"),
                (b"\t", b"\t\t"),
            ]
        )
    )
    return data.replace(old, new)


def _huge_number(draw: Callable, data: bytes) -> bytes:
    """Replace one number by a huge, negative, fractional or non-finite one."""
    spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?", data)]
    if not spans:
        return data
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    token = draw(
        st.sampled_from(
            [
                b"1e400",
                b"-1",
                b"0",
                b"nan",
                b"inf",
                b"-inf",
                b"0.5",
                b"-0.5",
                b"1e-320",
                b"99999999999999999999",
                b"4294967296",
                b"-9223372036854775809",
                b"1" * 400,
            ]
        )
    )
    return data[:a] + token + data[b:]


def _garbage(draw: Callable, data: bytes) -> bytes:
    """Append (or prepend) random bytes, possibly gzip-compressed."""
    junk = draw(st.binary(min_size=1, max_size=256))
    if draw(st.booleans()):
        junk = gzip.compress(junk, mtime=0)  # no timestamp: the same example on every run
    return data + junk if draw(st.booleans()) else junk + data


MUTATIONS: Sequence[Callable[[Callable, bytes], bytes]] = (
    _flip, _truncate, _insert, _dup_line, _del_line, _swap_lines, _swap_fields, _set_field, _set_field, _long_line,
    _delimiters, _huge_number, _huge_number, _garbage,
)  # fmt: skip


@st.composite
def mutated(draw: Callable, base: bytes, max_ops: int = 3) -> bytes:
    """``base`` after 1..max_ops random mutations (byte flips, truncation, line and field edits, special values...)."""
    data = base
    for _ in range(draw(st.integers(1, max_ops))):
        data = draw(st.sampled_from(MUTATIONS))(draw, data)
    return data


#: One field of a token soup: the special values, short text, numbers.
_field = special | st.text(max_size=6).map(str.encode) | st.integers(-(10**20), 10**20).map(lambda i: str(i).encode())


@st.composite
def token_soup(draw: Callable, separators: tuple[bytes, ...] = (b"\t", b",")) -> bytes:
    """Arbitrary line-and-field shaped text: lines of random fields, more likely to reach the parsers' inner
    checks than random bytes."""
    sep = draw(st.sampled_from(separators))
    rows = draw(st.lists(st.lists(_field, min_size=1, max_size=8), max_size=12))
    return b"\n".join(sep.join(r) for r in rows) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


arbitrary_bytes = st.binary(max_size=2048)


# --------------------------------------------------------------------------------------------------- checks


def assert_located_issue(
    path: str, message: str, line: int | None, files: dict[str, int | None], what: str = "issue"
) -> None:
    """One reported problem names one of ``files`` (path -> its line count, None when lines mean nothing), says
    something, and its line (if any) lies inside that file."""
    assert path in files, f"{what} names {path!r}, not one of {sorted(files)}: {message}"
    assert isinstance(message, str) and message.strip(), f"{what} on {path} has an empty message"
    if line is not None:
        n = files[path]
        assert isinstance(line, int) and line >= 1, f"{what} line {line!r} is not a 1-based line: {message}"
        if n is not None:
            assert line <= n, f"{what} points to line {line} of {path}, which has {n} line(s): {message}"


def text_files(paths: dict[Path, bytes]) -> dict[str, int | None]:
    """Path -> line count of the content a reader sees, for :func:`assert_located_issue`."""
    return {str(p): line_count(gunzip_or_raw(b)) for p, b in paths.items()}
