"""Attack efficiency: seconds per attack step per face, the arithmetic one step does, and how much
of the machine's own arithmetic speed that is.

    .venv/bin/python benchmarks/attack_speed.py [--presets fast standard] [--device cpu|cuda]
        [--faces 1] [--repeats 3] [--breakdown] [--set FIELD=VALUE ...] [--json OUT.json]

For each preset, on `photos-group/obama.jpg` (tiled `--faces` times):
- s/step/face: (time of protect() with the preset's steps - time with 1 step) / (steps - 1) /
  faces, the median of `--repeats` runs each, after a warm-up; detection, crops and encoding
  cancel out.
- GFLOP/step: what `torch.utils.flop_counter.FlopCounterMode` counts for protect() with 2 steps
  minus 1 step (every convolution, matrix product and grid sample of every surrogate, branch and
  view, forward and backward); GFLOP/s = that / s/step.
- the same run's matmul GFLOP/s (1024x1024 float32 products, the same threads and device): the
  machine's own reference. The ratio GFLOP/s / matmul GFLOP/s is the number to improve.
- `--breakdown`: one protect() under torch.profiler, time per stage (the engine's
  `record_function` labels: decode, detect, crops, surrogates, upload draws, penalties, backward,
  paste, encode).
Only the public API is used (`protect`, `ProtectSettings`), so the same script times any
checkout of the engine: run it with PYTHONPATH pointing at another worktree to compare.
On CUDA the timings synchronise the device and the GPU's utilisation is sampled when the NVML
bindings are installed. Run by hand on a quiet machine; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import threading
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lowkey_engine.protect import get_engine, protect
from lowkey_engine.settings import ProtectSettings
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
PORTRAIT = Path("photos-group") / "obama.jpg"
MATMUL_SIDE = 1024
MATMUL_REPEATS = 20


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str) -> float:
    """float32 GFLOP/s of square matrix products: the machine's reference speed."""
    a = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    for _ in range(3):
        a @ b
    synchronise(device)
    started = time.perf_counter()
    for _ in range(MATMUL_REPEATS):
        a @ b
    synchronise(device)
    return 2 * MATMUL_SIDE ** 3 * MATMUL_REPEATS / (time.perf_counter() - started) / 1e9


def photo_with_faces(faces_dir: Path, faces: int) -> bytes:
    """The portrait, or `faces` copies of it in a grid (one JPEG)."""
    import io

    from PIL import Image

    portrait = Image.open(faces_dir / PORTRAIT).convert("RGB")
    if faces == 1:
        return (faces_dir / PORTRAIT).read_bytes()
    side = math.ceil(math.sqrt(faces))
    tile = portrait.resize((portrait.width // side, portrait.height // side))
    sheet = Image.new("RGB", (tile.width * side, tile.height * side), (128, 128, 128))
    for k in range(faces):
        sheet.paste(tile, ((k % side) * tile.width, (k // side) * tile.height))
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def timed(data: bytes, settings: ProtectSettings, repeats: int) -> tuple[float, int]:
    """Median seconds of protect() over `repeats` runs, and the faces it protected."""
    seconds, faces = [], 0
    for _ in range(repeats):
        synchronise(settings.device)
        started = time.perf_counter()
        result = protect(data, settings)
        synchronise(settings.device)
        seconds.append(time.perf_counter() - started)
        faces = result.face_count
    return statistics.median(seconds), faces


def flops_of(data: bytes, settings: ProtectSettings) -> int:
    with FlopCounterMode(display=False) as counter:
        protect(data, settings)
    return counter.get_total_flops()


class UtilisationSampler:
    """Samples the GPU's utilisation (NVML) every 50 ms while it runs; None without NVML."""

    def __init__(self, device: str):
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                index = torch.device(device).index or 0
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self._nvml = pynvml
            except Exception:          # noqa: BLE001 - the bindings are optional
                self._handle = None

    def __enter__(self):
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc):
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def stage_breakdown(data: bytes, settings: ProtectSettings) -> dict[str, float]:
    """Seconds per engine stage (record_function labels) in one protect() call."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if settings.device.startswith("cuda") else [])
    with profile(activities=activities) as profiler:
        protect(data, settings)
    stages = {}
    for event in profiler.key_averages():
        if event.key.startswith(("protect:", "lowkey:")):
            stages[event.key] = event.cpu_time_total / 1e6
    return dict(sorted(stages.items(), key=lambda kv: -kv[1]))


def parse_override(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), tuple(value) if isinstance(value, list) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "standard"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, default=1, help="copies of the portrait in one photo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="time per stage with torch.profiler")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="FIELD=VALUE", help="override a setting for every preset")
    parser.add_argument("--faces-dir", default=str(faces_dir()))
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    data = photo_with_faces(Path(args.faces_dir), args.faces)
    reference = matmul_gflops(args.device)
    rows = []
    for preset in args.presets:
        settings = ProtectSettings.from_preset(preset, device=args.device, **dict(args.overrides))
        get_engine(settings)
        protect(data, settings.replace(steps=1))                               # warm-up
        one, faces = timed(data, settings.replace(steps=1), args.repeats)
        with UtilisationSampler(args.device) as sampler:
            full, _ = timed(data, settings, args.repeats)
        per_step = (full - one) / (settings.steps - 1) / max(1, faces)
        step_flops = (flops_of(data, settings.replace(steps=2)) - flops_of(data, settings.replace(steps=1)))
        gflops = step_flops / max(1, faces) / 1e9 / per_step
        row = {"preset": preset, "steps": settings.steps, "faces": faces, "seconds": full,
               "seconds_per_face": full / max(1, faces), "seconds_per_step_per_face": per_step,
               "gflop_per_step_per_face": step_flops / max(1, faces) / 1e9, "gflops": gflops,
               "matmul_gflops": reference, "ratio": gflops / reference, "gpu_utilisation": sampler.mean}
        if args.breakdown:
            row["stages"] = stage_breakdown(data, settings)
        rows.append(row)
        print(json.dumps(row), flush=True)
    machine = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "processor": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    print(f"\n{machine}\n")
    print("| preset | steps | faces | s/photo | s/face | s/step/face | GFLOP/step/face | GFLOP/s "
          "| matmul GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['steps']} | {r['faces']} | {r['seconds']:.2f} | {r['seconds_per_face']:.2f} | "
              f"{r['seconds_per_step_per_face'] * 1000:.0f} ms | {r['gflop_per_step_per_face']:.2f} | "
              f"{r['gflops']:.1f} | {r['matmul_gflops']:.0f} | {r['ratio']:.3f} |")
    for r in rows:
        if "stages" in r:
            print(f"\n{r['preset']}: seconds per stage in one photo (nested stages are inside protect:attack)")
            for stage, seconds in r["stages"].items():
                print(f"  {stage:48s} {seconds:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
