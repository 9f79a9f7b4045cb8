"""`lowkey eval`: arguments and the run (the protocol is in protocol.py, the files in report.py).

    lowkey datasets fetch lfw-dev && lowkey eval data/faces/lfw-dev --preset fast --limit 20
    lowkey eval FOLDER --preset fast --preset standard --gallery 2 --real-dlib --out eval-out
    lowkey eval FOLDER --preset fast --set steps=1 --transforms none jpeg75   # a quick smoke run
    lowkey eval FOLDER --preset fast --leave-one-out mfn-expo mfn-faceplugin face-reid-0095 mfn-casia
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lowkey" / "eval-protected"


def parse_override(text: str) -> tuple[str, object]:
    """'steps=1' -> ('steps', 1); values are read as JSON (numbers, true/false, null, [lists] ->
    tuples), anything else as a string. The key must be a ProtectSettings field."""
    import dataclasses

    from ..settings import ProtectSettings

    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    names = {f.name for f in dataclasses.fields(ProtectSettings)}
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE with FIELD one of {', '.join(sorted(names))}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, tuple(value) if isinstance(value, list) else value


def add_override_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--set FIELD=VALUE`, repeatable, into `args.overrides` as (field, value) pairs (parse_override)."""
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="FIELD=VALUE", help=help_text)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    from .protocol import DEFAULT_RECOGNIZERS, DEFAULT_TRANSFORMS
    from ..settings import PRESETS

    parser.add_argument("folder", help="labelled photos: FOLDER/<identity>/<photos> (LFW's dev set: "
                        "`lowkey datasets fetch lfw-dev`, then FOLDER is data/faces/lfw-dev)")
    parser.add_argument("--preset", dest="presets", action="append", choices=list(PRESETS),
                        help="preset to evaluate; repeat for several (default: fast)")
    add_override_argument(parser, "override a protection setting for every preset (e.g. steps=5)")
    parser.add_argument("--gallery", type=int, default=2,
                        help="protected gallery photos per identity; the others are clean probes (default 2)")
    parser.add_argument("--limit", type=int, help="only the first N identities (sorted by name)")
    parser.add_argument("--protect-limit", type=int,
                        help="protect and probe only the first N identities; every other identity's clean "
                             "gallery stays in the search as a distractor (a quicker run, same search size)")
    parser.add_argument("--max-per-identity", type=int, help="use at most this many photos of an identity")
    parser.add_argument("--seed", type=int, default=0, help="gallery/probe split and attack seed")
    parser.add_argument("--recognizers", nargs="+", default=list(DEFAULT_RECOGNIZERS),
                        help=f"our recognizers to search with (default: {' '.join(DEFAULT_RECOGNIZERS)})")
    attacked = parser.add_mutually_exclusive_group()
    attacked.add_argument("--ensemble", dest="ensembles", action="append", nargs="+", metavar="RECOGNIZER",
                          help="attack these recognizers instead of the preset's ensemble; repeat the flag "
                               "for several runs (every other recognizer is reported as held out)")
    attacked.add_argument("--leave-one-out", nargs="+", metavar="RECOGNIZER",
                          help="one run per recognizer given, attacking all the others: each is held out once")
    parser.add_argument("--real-dlib", action="store_true",
                        help="also the real dlib pipeline (HOG detector, own alignment and model): "
                             "needs the eval extra")
    parser.add_argument("--transforms", nargs="+", default=list(DEFAULT_TRANSFORMS),
                        help="upload transforms: none, jpegQ, half, maxN, scaleF, joined by '+' "
                             f"(default: {' '.join(DEFAULT_TRANSFORMS)})")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 5], help="rank-k accuracies to report")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--face-budget", type=int, default=1, metavar="N",
                        help="attack up to N faces of several gallery photos together, as the daemon and "
                             "`lowkey protect` do (default 1: one photo at a time)")
    parser.add_argument("--out", default="lowkey-eval", help="folder for results.json, results.md and the PNGs")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None, help=f"protected-photo cache (default {default_cache_dir()})")
    cache.add_argument("--no-cache", action="store_true", help="protect every photo again, keep nothing")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS even when its backbone is fetched")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    from .protocol import EvalConfig, leave_one_out, run_evaluation
    from .report import write_report

    cache_dir = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        ensembles = leave_one_out(args.leave_one_out) if args.leave_one_out else tuple(map(tuple, args.ensembles or ()))
    except ValueError as exc:
        print(f"lowkey eval: {exc}", file=sys.stderr)
        return 2
    config = EvalConfig(root=args.folder, ensembles=ensembles, presets=tuple(args.presets or ["fast"]),
                        overrides=dict(args.overrides), gallery=args.gallery, limit=args.limit,
                        protect_limit=args.protect_limit, max_per_identity=args.max_per_identity,
                        seed=args.seed, recognizers=tuple(args.recognizers), real_dlib=args.real_dlib,
                        transforms=tuple(args.transforms), ranks=tuple(args.ranks), device=args.device,
                        cache_dir=cache_dir, lpips=not args.no_lpips, face_budget=args.face_budget)
    try:
        results = run_evaluation(config, quiet=args.quiet)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        print(f"lowkey eval: {exc}", file=sys.stderr)
        return 2
    paths = write_report(results, Path(args.out))
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
