"""The files `lowkey eval` writes: results.json (every number and the settings), results.md (the
tables), accuracy.png (rank-1 per recognizer, preset and upload transform) and contact-sheet.png
(original | protected | difference amplified)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..attack.perceptual import SHADING_SIGMA_PER_FACE

#: Contact sheet: the change is shown as 0.5 + AMPLIFY * (protected - original).
DIFFERENCE_AMPLIFY = 10.0
SHEET_CELL = 200
SHEET_LABEL = 16


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_report(results: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "accuracy.png",
             "contact_sheet": out / "contact-sheet.png"}
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    paths["json"].write_text(json.dumps(_clean(public), indent=2) + "\n")
    paths["markdown"].write_text(markdown(public))
    plot_accuracy(public, paths["plot"])
    contact_sheet(results.get("_samples", {}), paths["contact_sheet"])
    return paths


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f} %"


def _num(summary: dict | None, key: str = "mean", digits: int = 3) -> str:
    return "–" if not summary else f"{summary[key]:.{digits}f}"


def _protected_part(dataset: dict[str, Any]) -> str:
    protected = dataset.get("protected_gallery_photos", dataset["gallery_photos"])
    if protected == dataset["gallery_photos"]:
        return "all protected"
    return (f"those of the first {dataset['subjects']} identities protected ({protected} photos; "
            "the others are clean distractors)")


def markdown(results: dict[str, Any]) -> str:
    config, dataset = results["config"], results["dataset"]
    ranks = config["ranks"]
    lines = [
        "# lowkey eval",
        "",
        f"Folder `{config['root']}`: {dataset['identities']} identities, {dataset['gallery_photos']} gallery photos "
        f"({config['gallery_per_identity']} per identity), {_protected_part(dataset)}, "
        f"{dataset['probes']} clean probes; "
        f"seed {config['seed']}; device {config['device']}. Overrides: {config['overrides'] or 'none'}.",
        "",
        "Protocol: for each probe its own identity's gallery is protected and every other identity's gallery is "
        "clean; the nearest gallery photo decides (rank-k: the true identity among the k identities with the "
        "best-scoring photo). Clean = the same search with all galleries clean. Upload transforms act on the "
        "gallery photos (clean and protected) with Pillow. A gallery face the recognizer's detector no longer "
        "finds is left out (counts as protected): see the 'not found' columns.",
        "",
        "## Image quality (gallery photos as delivered)",
        "",
        "| preset | photos | photo PSNR dB | photo SSIM | face PSNR dB | face SSIM (min) | face ΔE2000 mean / p95 "
        "| face shading (levels) | face LPIPS | attack s/photo | file size out/in, median (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, q in results["quality"].items():
        lpips = _num(q["face_lpips"]) if q.get("face_lpips") else "n/a"
        lines.append(f"| {preset} | {q['photos']} | {_num(q['photo_psnr'], digits=1)} | {_num(q['photo_ssim'])} | "
                     f"{_num(q['face_psnr'], digits=1)} | {_num(q['face_ssim'])} ({_num(q['face_ssim'], 'min')}) | "
                     f"{_num(q['face_delta_e'], digits=2)} / {_num(q['face_delta_e_p95'], digits=2)} | "
                     f"{_num(q['face_shading'], digits=2)} | {lpips} | "
                     f"{_num(q['attack_seconds_per_photo'], digits=1)} | "
                     f"{_num(q.get('bytes_ratio'), 'median', 2)} ({_num(q.get('bytes_ratio'), 'max', 2)}) |")
    lines += ["", "Means over photos; face = the protected face's box. ΔE2000 ≈ 2.3 is a just-noticeable colour "
              f"difference. Shading: RMS of the change blurred by 1/{round(1 / SHADING_SIGMA_PER_FACE)} of the "
              "face box, in 8-bit levels "
              f"(smooth lighter or darker patches). LPIPS: {results['perceptual']['lpips']}.", "",
              "## Identification accuracy, clean → protected", ""]
    header = ["recognizer", "role", "preset", "transform", "probes"]
    header += [f"rank-{k} clean → protected" for k in ranks]
    header += ["pair-match clean → protected", "gallery faces not found (clean / protected)",
               "probes whose own gallery vanished"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["results"]:
        cells = [row["recognizer"], row["role"], row["preset"], row["transform"], str(row["probes"])]
        cells += [f"{_pct(row[f'rank{k}_clean'])} → **{_pct(row[f'rank{k}_protected'])}**" for k in ranks]
        pairs = row.get("pair_match_protected")
        cells += [f"{_pct(row['pair_match_clean'])} → **{_pct(pairs)}** ({row['pairs']} pairs)"
                  if pairs is not None else "–"]
        cells += [f"{_pct(row['gallery_undetected_clean'])} / {_pct(row['gallery_undetected_protected'])}",
                  _pct(row["probes_own_gallery_gone"])]
        lines.append("| " + " | ".join(cells) + " |")
    points = results["config"].get("operating_points", {})
    if points:
        lines += ["", "Pair-match: the share of (own gallery photo, clean probe) pairs the recognizer still calls "
                  "the same person at its operating point: "
                  + "; ".join(f"`{name}` {p['metric']} {'≥' if p['metric'] == 'cosine' else '<'} {p['threshold']:.3f}"
                              for name, p in points.items()) + "."]
    cache = results.get("cache", {})
    lines += ["", f"Protected photos: {cache.get('misses', 0)} computed, {cache.get('hits', 0)} from the cache. "
              f"Wall time {results['environment']['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    """One panel per recognizer: the lowest rank-k asked for (rank-1) per upload transform, clean
    vs each preset as bars, the highest (rank-5) as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    recognizers = list(dict.fromkeys(r["recognizer"] for r in rows)) or ["(none)"]
    transforms = list(dict.fromkeys(r["transform"] for r in rows))
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    low_rank, top_rank = min(results["config"]["ranks"]), max(results["config"]["ranks"])
    series = ["clean"] + presets
    width = 0.8 / max(1, len(series))
    size = (max(6, 1.2 * len(transforms) + 2), 2.8 * len(recognizers))
    figure, axes = plt.subplots(len(recognizers), 1, figsize=size, squeeze=False)
    for axis, recognizer in zip(axes[:, 0], recognizers):
        for s, name in enumerate(series):
            values, top = [], []
            for transform in transforms:
                match = [r for r in rows if r["recognizer"] == recognizer and r["transform"] == transform
                         and (name == "clean" or r["preset"] == name)]
                key = "clean" if name == "clean" else "protected"
                values.append(match[0][f"rank{low_rank}_{key}"] if match else float("nan"))
                top.append(match[0].get(f"rank{top_rank}_{key}", float("nan")) if match else float("nan"))
            x = np.arange(len(transforms)) + (s - (len(series) - 1) / 2) * width
            bars = axis.bar(x, values, width, label=f"{name} rank-{low_rank}")
            axis.plot(x, top, "o", color=bars.patches[0].get_facecolor() if bars.patches else None,
                      markeredgecolor="black", markersize=4, label=f"{name} rank-{top_rank}")
        role = next((r["role"] for r in rows if r["recognizer"] == recognizer), "")
        axis.set_title(f"{recognizer} ({role})", fontsize=10)
        axis.set_ylim(0, 1.05)
        axis.set_ylabel("accuracy")
        axis.set_xticks(np.arange(len(transforms)), transforms, fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def to_image(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) RGB in [0, 1] -> an 8-bit PIL image."""
    return Image.fromarray((pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _tile(pixels: torch.Tensor, cell: int) -> Image.Image:
    image = to_image(pixels)
    scale = cell / max(image.size)            # fit the cell: small faces enlarged, big photos shrunk
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def contact_sheet(samples: dict[str, Any], path: Path, amplify: float = DIFFERENCE_AMPLIFY,
                  cell: int = SHEET_CELL) -> None:
    """Rows = photos; columns = original, then per preset: protected, and the change amplified
    `amplify` times around mid-grey. Each picture fits a `cell` x `cell` square."""
    photos = samples.get("photos", [])
    presets = list(samples.get("protected", {}))
    columns = ["original"] + [c for p in presets for c in (p, f"{p} change x{amplify:g}")]
    sheet = Image.new("RGB", (cell * len(columns), SHEET_LABEL + cell * max(1, len(photos))), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((c * cell + 4, 2), title, fill="black")
    for r, (name, original) in enumerate(photos):
        y = SHEET_LABEL + r * cell
        sheet.paste(_tile(original, cell), (0, y))
        for p, preset in enumerate(presets):
            protected = samples["protected"][preset][r]
            sheet.paste(_tile(protected, cell), ((1 + 2 * p) * cell, y))
            sheet.paste(_tile(0.5 + amplify * (protected - original), cell), ((2 + 2 * p) * cell, y))
        draw.text((4, y + cell - 14), name[-32:], fill="yellow")
    sheet.save(path)
