"""Protection vs visibility: attack designs compared on measured curves (issue 6).

    .venv/bin/python benchmarks/visibility_curves.py [--subjects 30] [--preset fast] [--jobs 2]

Each design is one way to spend the change; each point is one strength of it. A point is a
`lowkey eval` on the fetched lfw-dev (`lowkey datasets fetch lfw-dev`) with the first `--subjects`
identities protected and every other identity's clean gallery kept as a distractor (the full search), held-out
`dlib-resnet` rank-1 after half-size + JPEG q75 against the face region's CIEDE2000 95th
percentile. Protected photos are cached (~/.cache/lowkey/eval-protected), so a rerun only redraws.
Writes benchmarks/results/visibility-curves.{json,md,png}; run by hand, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
LFW = faces_dir() / "lfw-dev"
TRANSFORM = "half+jpeg75"
HELD_OUT = "dlib-resnet"

#: Each design: its knobs (on top of the preset, whose transfer aids - momentum, alignment jitter,
#: upload pipeline - all designs share), the knob that sets its strength, and the strengths tried.
#: The first three leave the shading penalty off, as when their curves were measured.
#: Every design keeps the constant steps the presets had when the curves were measured (no cosine
#: step schedule; `fast`: 15 steps of 0.004), so a rerun reproduces the recorded numbers.
CONSTANT_STEPS = {"step_size": 0.004, "step_decay": 1.0}
DESIGNS = {
    # the paper's attack: every channel free within an L-infinity budget
    "rgb, L-inf budget": ({**CONSTANT_STEPS, "colour": "rgb", "delta_e_cap": None, "shading_weight": 0.0}, "epsilon",
                          [4 / 255, 7 / 255, 10 / 255]),
    # lightness only (chroma stable), the budget following local texture (flat skin gets half)
    "luma, texture budget": ({**CONSTANT_STEPS, "colour": "luma", "delta_e_cap": None, "texture_floor": 0.5,
                              "shading_weight": 0.0},
                             "epsilon", [6 / 255, 9 / 255, 12 / 255]),
    # lightness only, each pixel's budget a CIEDE2000 cap
    "luma, ΔE2000 cap": ({**CONSTANT_STEPS, "colour": "luma", "shading_weight": 0.0}, "delta_e_cap", [1.6, 2.2, 2.8]),
    # the same with smooth lighter/darker patches penalised (the presets' design)
    "luma, ΔE2000 cap, shading penalty": ({**CONSTANT_STEPS, "colour": "luma", "shading_weight": 1.5},
                                          "delta_e_cap", [1.6, 2.2, 2.8]),
}


def measure(design: str, knob: str, value: float, preset: str, subjects: int) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from lowkey_engine.evaluation.cli import default_cache_dir
    from lowkey_engine.evaluation.protocol import EvalConfig, run_evaluation

    overrides = {**DESIGNS[design][0], knob: value}
    config = EvalConfig(root=LFW, presets=(preset,), overrides=overrides, protect_limit=subjects,
                        recognizers=(HELD_OUT,), transforms=("none", TRANSFORM), cache_dir=default_cache_dir(),
                        lpips=False)
    results = run_evaluation(config, quiet=True)
    rows = {r["transform"]: r for r in results["results"]}
    quality = results["quality"][preset]
    return {"design": design, "knob": knob, "value": value, "overrides": overrides,
            "rank1": rows[TRANSFORM]["rank1_protected"], "rank1_as_uploaded": rows["none"]["rank1_protected"],
            "rank1_clean": rows[TRANSFORM]["rank1_clean"],
            "delta_e_p95": quality["face_delta_e_p95"]["mean"], "delta_e_mean": quality["face_delta_e"]["mean"],
            "face_ssim": quality["face_ssim"]["mean"], "probes": rows[TRANSFORM]["probes"]}


def plot(points: list[dict], path: Path, preset: str, subjects: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for design in DESIGNS:
        mine = sorted((p for p in points if p["design"] == design), key=lambda p: p["delta_e_p95"])
        axis.plot([p["delta_e_p95"] for p in mine], [100 * p["rank1"] for p in mine], "o-", label=design)
    axis.axvline(3.0, color="grey", linestyle=":", label="ΔE2000 3.0")
    axis.set_xlabel("face ΔE2000, 95th percentile (mean over photos)")
    axis.set_ylabel(f"{HELD_OUT} rank-1 after {TRANSFORM} (%)")
    axis.set_title(f"protection vs visibility: preset {preset}, lfw-dev, {subjects} protected identities", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=30, help="identities protected (the rest are distractors)")
    parser.add_argument("--preset", default="fast", help="the number of steps comes from this preset")
    parser.add_argument("--jobs", type=int, default=2, help="points measured at once (one torch thread each)")
    args = parser.parse_args()
    jobs = [(design, knob, value, args.preset, args.subjects)
            for design, (_, knob, values) in DESIGNS.items() for value in values]
    with ProcessPoolExecutor(args.jobs) as pool:
        points = list(pool.map(measure, *zip(*jobs)))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "visibility-curves.json").write_text(json.dumps(points, indent=2))
    lines = [f"| design | strength | face ΔE2000 p95 | face SSIM | {HELD_OUT} rank-1 as uploaded | "
             f"after {TRANSFORM} |", "|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['design']} | {p['knob']} {p['value']:.4g} | {p['delta_e_p95']:.2f} | "
                     f"{p['face_ssim']:.3f} | {100 * p['rank1_as_uploaded']:.0f} % | {100 * p['rank1']:.0f} % |")
    table = "\n".join(lines)
    (out / "visibility-curves.md").write_text(table + "\n")
    plot(points, out / "visibility-curves.png", args.preset, args.subjects)
    print(table)
    print(f"wrote {out / 'visibility-curves.png'}")


if __name__ == "__main__":
    main()
