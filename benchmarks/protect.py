"""Protection benchmark: seconds per photo and per face by preset, growth with megapixels and with
faces per photo, peak memory.

    .venv/bin/python benchmarks/protect.py [--device cpu] [--presets fast standard] [--quick]

Photos are built from one real portrait (the fetched photos-group/obama.jpg): scaled to
1, 12 and 48 megapixels (one face), and tiled 1, 4 and 16 times into a photo of about 2 megapixels
(that many faces). Prints Markdown and writes benchmarks/results/protect-<device>.json. Run by hand
on a quiet machine; never part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import resource
import time
from pathlib import Path

import torch
from PIL import Image

from lowkey_engine.protect import get_engine, protect
from lowkey_engine.settings import PRESETS, ProtectSettings
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
MEGAPIXELS = (1, 12, 48)
FACE_COUNTS = (1, 4, 16)
TILED_PHOTO_MEGAPIXELS = 2


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def scaled_to(portrait: Image.Image, megapixels: float) -> Image.Image:
    factor = math.sqrt(megapixels * 1e6 / (portrait.width * portrait.height))
    return portrait.resize((round(portrait.width * factor), round(portrait.height * factor)), Image.LANCZOS)


def tiled(portrait: Image.Image, faces: int) -> Image.Image:
    """`faces` copies of the portrait in a square grid, the whole about TILED_PHOTO_MEGAPIXELS."""
    side = math.ceil(math.sqrt(faces))
    tile = scaled_to(portrait, TILED_PHOTO_MEGAPIXELS / side ** 2)
    sheet = Image.new("RGB", (tile.width * side, tile.height * side), (128, 128, 128))
    for k in range(faces):
        sheet.paste(tile, ((k % side) * tile.width, (k // side) * tile.height))
    return sheet


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(data: bytes, settings: ProtectSettings) -> dict:
    if settings.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = protect(data, settings)
    seconds = time.perf_counter() - started
    row = {"seconds": seconds, "faces": result.face_count,
           "seconds_per_face": seconds / max(1, result.face_count), "peak_rss_mb": peak_rss_mb()}
    if settings.device.startswith("cuda"):
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--faces-dir", default=str(faces_dir()))
    parser.add_argument("--quick", action="store_true", help="1 MP and 1-4 faces only")
    args = parser.parse_args()

    portrait = Image.open(Path(args.faces_dir) / "photos-group" / "obama.jpg").convert("RGB")
    started = time.perf_counter()
    get_engine(ProtectSettings(device=args.device))
    load_seconds = time.perf_counter() - started
    megapixels = MEGAPIXELS[:1] if args.quick else MEGAPIXELS
    face_counts = FACE_COUNTS[:2] if args.quick else FACE_COUNTS
    cases = [(f"{mp} MP, 1 face", jpeg_bytes(scaled_to(portrait, mp))) for mp in megapixels]
    cases += [(f"{TILED_PHOTO_MEGAPIXELS} MP, {n} face{'' if n == 1 else 's'}", jpeg_bytes(tiled(portrait, n)))
              for n in face_counts]
    rows = []
    for preset in args.presets:
        settings = ProtectSettings.from_preset(preset, device=args.device)
        protect(cases[0][1], settings.replace(steps=1))           # warm-up
        for name, data in cases:
            rows.append({"preset": preset, "case": name, **run_case(data, settings)})
            print(rows[-1], flush=True)

    machine = {"device": args.device, "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "processor": platform.processor() or platform.machine()}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    out = HERE / "results" / f"protect-{args.device.replace(':', '')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "engine_load_seconds": load_seconds, "rows": rows}, indent=2))
    print(f"\nEngine load (detector + ensemble): {load_seconds:.2f} s on {args.device}\n")
    print("| preset | photo | faces found | seconds | s/face | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['case']} | {r['faces']} | {r['seconds']:.1f} | "
              f"{r['seconds_per_face']:.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
