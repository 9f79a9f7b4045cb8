"""The long fuzz run: 10,000 cases (or --cases) per target, one process.

    .venv/bin/python -m fuzz.run [--cases 10000] [--seed 0] [--targets frame message decode websocket]

Prints, per target: cases run, crashes (an unexpected exception, or a property that failed),
cases above the hang limit, the outcomes seen, the slowest case, and the most memory one case
needed. Exits 1 when any target crashed, hung or had a case above its memory budget. Unlike the
tests it does not stop at the first failure: every crash is counted, and the first few are printed
with the case that caused them (rerun with the same --seed to reproduce). Results go to
fuzz/README.md by hand; --json writes them to a file too.

Memory per case (Linux): the kernel's resident high-water mark is reset before each case
(/proc/self/clear_refs) and read after it; the case's peak is that mark minus what was resident
when it started. It counts native allocations (Pillow, libjpeg, torch) that tracemalloc does not
see, and leaves out hypothesis' own record of the cases it generated (about 13 KB a case, which
is most of the process's growth over a run). Elsewhere only the process's overall growth is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lowkey_daemon.config import Limits

from .daemon import FuzzDaemon, check_socket
from .seeds import build_seeds, default_faces_dir
from .strategies import (LONG_EXAMPLES, LONG_PROFILE, Case, client_messages, frame_cases,
                         header_cases, image_cases, socket_cases)
from .targets import FUZZ_MAX_PIXELS, check_decode, check_frame, check_message, check_round_trip

#: A case slower than this counts as a hang, seconds.
HANG_SECONDS = 10.0
#: Cases run first and not counted: one-time set-up (hypothesis' Unicode tables, Pillow's
#: plugins, the first connection) is not what is measured.
WARM_UP_CASES = 50
#: Crashes printed in full per target.
CRASHES_SHOWN = 5
_MIB = 2 ** 20
#: Most memory one case may need, MiB. Frames and messages: a few copies of a 16 KiB header. An
#: image: one FUZZ_MAX_PIXELS picture at most (Pillow's buffer, an RGB(A) copy, the float
#: tensor: about 30 bytes a pixel). A socket case: a frame of 64 KiB on both ends, and a decode.
MEMORY_BUDGET_MB = {"frame": 16, "message": 16, "decode": 30 * FUZZ_MAX_PIXELS // _MIB,
                    "websocket": 64}
#: The daemon's own header limit (the frame and message targets parse with it).
MAX_HEADER_BYTES = Limits().max_header_bytes
#: Label of a message-target case that is a valid message (checked by its round trip).
VALID_MESSAGE = "valid"

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_HIGH_WATER_MARK = "5"   # clear_refs: reset the peak resident set size (Linux >= 4.0)
_KIB_FIELD = re.compile(r"^(VmHWM|VmRSS):\s+(\d+) kB$", re.MULTILINE)


@dataclass
class Target:
    """name; context: what the cases need (seeds, a running daemon), opened once; strategy and
    check built from that context."""

    name: str
    context: Callable[[], ContextManager[Any]]
    strategy: Callable[[Any], st.SearchStrategy]
    check: Callable[[Any, Any], str]


@dataclass
class Report:
    target: str
    cases: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: int = 0
    outcomes: Counter = field(default_factory=Counter)
    slowest_seconds: float = 0.0
    slowest_case: str = ""
    #: Most memory one case needed, MiB (None where it cannot be measured), and that case.
    case_peak_mb: float | None = None
    case_peak_case: str = ""
    #: How much the process's resident set grew while the target ran, MiB (mostly hypothesis).
    rss_growth_mb: float = 0.0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        over = self.case_peak_mb is not None and self.case_peak_mb > MEMORY_BUDGET_MB[self.target]
        return bool(self.crashes or self.hangs or over)


# --------------------------------------------------------------------------- memory

class CaseMemory:
    """New resident memory while one case runs, from the kernel's high-water mark (Linux)."""

    def __init__(self) -> None:
        try:
            _PROC_CLEAR_REFS.write_text(_RESET_HIGH_WATER_MARK)
            self.available = True
        except OSError:
            self.available = False
        self._resident_kib = 0

    def start(self) -> None:
        if self.available:
            _PROC_CLEAR_REFS.write_text(_RESET_HIGH_WATER_MARK)
            self._resident_kib = _status_kib()["VmRSS"]

    def peak_mb(self) -> float | None:
        """MiB above the resident set at start(), at the case's peak."""
        if not self.available:
            return None
        return max(0, _status_kib()["VmHWM"] - self._resident_kib) / 1024


def _status_kib() -> dict[str, int]:
    return {name: int(value) for name, value in _KIB_FIELD.findall(_PROC_STATUS.read_text())}


def resident_mb() -> float:
    """The process's resident set now (Linux), else its peak so far (getrusage), MiB."""
    if _PROC_STATUS.exists():
        return _status_kib()["VmRSS"] / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / _MIB   # macOS: bytes; others: KiB


# --------------------------------------------------------------------------- targets

@contextlib.contextmanager
def _nothing():
    yield None


@contextlib.contextmanager
def _seeds():
    yield build_seeds(default_faces_dir())


@contextlib.contextmanager
def _daemon():
    with tempfile.TemporaryDirectory(prefix="lowkey-fuzz-") as workdir:
        with FuzzDaemon(Path(workdir)) as daemon:
            yield daemon


def _message_cases(_: Any) -> st.SearchStrategy:
    return st.one_of(header_cases(), client_messages().map(lambda m: Case(VALID_MESSAGE, m)))


def _check_message_case(_: Any, case: Case) -> str:
    if case.label == VALID_MESSAGE:
        return check_round_trip(case.value, MAX_HEADER_BYTES)
    return check_message(case)


TARGETS = {
    "frame": Target("frame", _nothing, lambda _: frame_cases(MAX_HEADER_BYTES),
                    lambda _, case: check_frame(case, MAX_HEADER_BYTES)),
    "message": Target("message", _nothing, _message_cases, _check_message_case),
    "decode": Target("decode", _seeds, lambda seeds: image_cases(seeds, FUZZ_MAX_PIXELS),
                     lambda _, case: check_decode(case, FUZZ_MAX_PIXELS)),
    "websocket": Target("websocket", _daemon,
                        lambda daemon: socket_cases(daemon.config.limits.max_header_bytes,
                                                    daemon.config.limits.max_frame_bytes),
                        check_socket),
}


# --------------------------------------------------------------------------- running

def run_target(target: Target, cases: int, seed: int) -> Report:
    report = Report(target.name)
    memory = CaseMemory()
    with target.context() as context:
        strategy = target.strategy(context)
        _fuzz(target, context, strategy, Report(target.name), memory, WARM_UP_CASES, seed + 1)
        resident_before = resident_mb()
        started = time.perf_counter()
        _fuzz(target, context, strategy, report, memory, cases, seed)
        report.seconds = time.perf_counter() - started
        report.rss_growth_mb = resident_mb() - resident_before
    return report


def _fuzz(target: Target, context: Any, strategy: st.SearchStrategy, report: Report,
          memory: CaseMemory, count: int, seed: int) -> None:
    """`count` cases from `strategy` (seeded), each checked and recorded in `report`."""
    @hypothesis.seed(seed)
    @settings(settings.get_profile(LONG_PROFILE), max_examples=count)
    @given(strategy)
    def one_case(case: Any) -> None:
        _run_case(target, context, case, report, memory)

    one_case()


def _run_case(target: Target, context: Any, case: Any, report: Report, memory: CaseMemory) -> None:
    memory.start()
    started = time.perf_counter()
    try:
        outcome = target.check(context, case)
    except Exception as error:   # noqa: BLE001 - counting every crash is the point
        outcome = f"CRASH {type(error).__name__}"
        if len(report.crashes) < CRASHES_SHOWN:
            print(f"\n[{target.name}] crash on {case!r}\n{traceback.format_exc()}", file=sys.stderr)
        report.crashes.append(f"{type(error).__name__}: {error} <- {_label(case)}")
    elapsed = time.perf_counter() - started
    peak = memory.peak_mb()
    report.cases += 1
    report.outcomes[outcome] += 1
    report.hangs += elapsed > HANG_SECONDS
    if elapsed > report.slowest_seconds:
        report.slowest_seconds, report.slowest_case = elapsed, _label(case)
    if peak is not None and peak > (report.case_peak_mb or 0):
        report.case_peak_mb, report.case_peak_case = peak, _label(case)


def _label(case: Any) -> str:
    return case.label if isinstance(case, Case) else type(case).__name__


def markdown(reports: list[Report]) -> str:
    lines = ["| target | cases | crashes | hangs | slowest case | most memory one case needed "
             "(MiB) | RSS growth over the run (MiB) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        memory = "n/a" if r.case_peak_mb is None else (
            f"{r.case_peak_mb:.1f} (budget {MEMORY_BUDGET_MB[r.target]}): `{r.case_peak_case}`")
        lines.append(f"| {r.target} | {r.cases} | {len(r.crashes)} | {r.hangs} | "
                     f"{r.slowest_seconds * 1000:.0f} ms: `{r.slowest_case}` | {memory} | "
                     f"{r.rss_growth_mb:.0f} | {r.seconds:.0f} |")
    lines.append("")
    for r in reports:
        outcomes = ", ".join(f"{name} {count}" for name, count in r.outcomes.most_common())
        lines.append(f"- {r.target} outcomes: {outcomes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=LONG_EXAMPLES, help="cases per target")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same cases)")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    # Pillow warns about damaged EXIF (skipped) and huge headers (refused all the same).
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")

    reports = []
    for name in args.targets:
        print(f"fuzzing {name}: {args.cases} cases, seed {args.seed}", file=sys.stderr, flush=True)
        reports.append(run_target(TARGETS[name], args.cases, args.seed))
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
          f"hypothesis {hypothesis.__version__}, seed {args.seed}\n")
    print(markdown(reports))
    for report in reports:
        for crash in report.crashes:
            print(f"- {report.target} crash: {crash}")
    if args.json:
        args.json.write_text(json.dumps([{**vars(r), "outcomes": dict(r.outcomes)} for r in reports],
                                        indent=2))
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
