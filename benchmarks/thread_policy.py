"""Thread policy: seconds per photo for each way of running torch's threads, on a quiet machine and
while another CPU-bound program keeps every core busy.

    .venv/bin/python benchmarks/thread_policy.py [--preset fast] [--photos 3] [--policies ...]

Each (policy, condition) runs in a fresh process (OpenMP reads its settings once, at start): load
the engine, protect `photos-group/obama.jpg` once to warm up, then `--photos` times; the median
seconds per photo is reported. The competitor is one busy-looping process per core, started before
the measured process and stopped after it. A policy is the environment of the measured process,
and for "idle cores" lowkey_engine.runtime.use_idle_cores() before each photo (what `lowkey`
and the daemon do). Run by hand on an otherwise idle machine; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
#: Environment variable telling the measured process to pick its threads before each photo.
IDLE_CORES_FLAG = "LOWKEY_BENCH_IDLE_CORES"
#: name -> environment of the measured process.
POLICIES = {
    "idle cores at each photo (LowKey's default)": {IDLE_CORES_FLAG: "1"},
    "torch's default (every core)": {},
    "every core, OpenMP passive wait": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}
#: what the measured process runs: prints the seconds of each protected photo as JSON.
MEASURE = """
import json, os, sys, time
from pathlib import Path
import torch
from lowkey_engine.protect import protect
from lowkey_engine.runtime import use_idle_cores
from lowkey_engine.settings import ProtectSettings
data = Path(sys.argv[1]).read_bytes()
settings = ProtectSettings.from_preset(sys.argv[2], device="cpu")
adaptive = bool(os.environ.get(sys.argv[4]))
protect(data, settings)                                    # warm-up: models loaded, caches filled
seconds, threads = [], []
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()                          # the idle-core sample counts as time
    if adaptive:
        use_idle_cores()
    protect(data, settings)
    seconds.append(time.perf_counter() - started)
    threads.append(torch.get_num_threads())
print(json.dumps({"seconds": seconds, "threads": threads}))
"""


def busy_loop() -> None:
    while True:
        pass


def measure(env: dict[str, str], photo: Path, preset: str, photos: int, busy: bool) -> dict:
    competitors = []
    if busy:
        competitors = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(os.cpu_count() or 1)]
        for process in competitors:
            process.start()
        time.sleep(1.0)
    try:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "GOMP_"))}
        done = subprocess.run([sys.executable, "-c", MEASURE, str(photo), preset, str(photos), IDLE_CORES_FLAG],
                              env={**run_env, **env}, capture_output=True, text=True, check=True)
    finally:
        for process in competitors:
            process.terminate()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--faces-dir", default=str(faces_dir()))
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    photo = Path(args.faces_dir) / "photos-group" / "obama.jpg"
    results = {}
    for condition, busy in (("quiet", False), ("busy", True)):
        for name in args.policies:
            row = measure(POLICIES[name], photo, args.preset, args.photos, busy)
            results[(name, condition)] = statistics.median(row["seconds"])
            print(json.dumps({"policy": name, "condition": condition, **row}), flush=True)
    print(f"\n{os.cpu_count()} cores, preset {args.preset}, obama.jpg (1 face), median of {args.photos} photos "
          "after a warm-up; busy = one busy-looping process per core\n")
    print("| policy | quiet s/photo | x best | busy s/photo | x best |")
    print("|---|---|---|---|---|")
    best = {c: min(v for (_, cc), v in results.items() if cc == c) for c in ("quiet", "busy")}
    for name in args.policies:
        quiet, busy = results[(name, "quiet")], results[(name, "busy")]
        print(f"| {name} | {quiet:.2f} | {quiet / best['quiet']:.2f} | {busy:.2f} | {busy / best['busy']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps([{"policy": p, "condition": c, "seconds": s}
                                               for (p, c), s in results.items()], indent=2))


if __name__ == "__main__":
    main()
