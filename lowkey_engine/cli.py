"""`lowkey`: the engine's command line.

    lowkey protect PATH... [-o OUT | --out-dir DIR] [--preset P] [--device D] [--face-budget N]
    lowkey weights list                 what model files exist, where from, fetched or not
    lowkey weights fetch [IDS] [--force]
    lowkey datasets list                face-photo sets for tests and eval, where from, fetched or not
    lowkey datasets fetch [NAMES] [--dir DIR]   into DIR/<set>/<identity>/<image> (default data/faces)
    lowkey detect PHOTO...              faces found, with boxes
    lowkey eval FOLDER [--preset P...] [--limit N] [--real-dlib]   identification accuracy, clean vs protected
    lowkey side-by-side PHOTO... [--out SHEET.png] [--blind-dir DIR]   before | after | change, to look at
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: Suffix added to a protected photo's name when it is written beside its original.
PROTECTED_SUFFIX = ".lowkey"


def _photo_suffixes() -> frozenset[str]:
    """Suffixes of the files a folder is searched for: those of every format LowKey protects."""
    from .images.formats import protected_formats

    return frozenset(f".{extension}" for f in protected_formats() for extension in f.extensions)


def _weights_list(args: argparse.Namespace) -> int:
    from lowkey_weights.fetch import is_fetched, mirror_dir
    from lowkey_weights.manifest import load_manifest

    rows = []
    for entry in load_manifest().values():
        if is_fetched(entry):
            state = "ready"
        elif entry.needs_internet and not (entry.mirrored and mirror_dir() is not None):
            state = "needs internet"
        else:
            state = "not fetched"
        sources = ", ".join(sorted({f.source for f in entry.files}))
        rows.append((entry.id, entry.role, state, "yes" if entry.default else "", sources))
    _print_table(("id", "role", "state", "default", "source"), rows)
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from lowkey_weights.fetch import fetch

    return _report_fetch(lambda: fetch(args.ids, force=args.force))


def _report_fetch(run: Callable[[], list[str]]) -> int:
    """Exit status of a fetch step that returns the names it could not fetch: 0 all fetched,
    1 some failed (each already logged), 2 the request itself was wrong (an unknown name)."""
    from lowkey_weights.fetch import FetchError

    try:
        failed = run()
    except FetchError as exc:
        print(f"lowkey: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"lowkey: could not fetch: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _datasets_list(args: argparse.Namespace) -> int:
    from lowkey_weights.datasets import DATA_MIRROR_ENV, faces_dir, is_fetched, load_datasets
    from lowkey_weights.fetch import mirror_dir

    root = Path(args.dir) if args.dir else faces_dir()
    rows = []
    for dataset in load_datasets().values():
        if is_fetched(dataset, root):
            state = "ready"
        elif dataset.needs_internet or (mirror_dir(DATA_MIRROR_ENV) is None
                                        and any(s.startswith("github:") for s in dataset.sources)):
            state = "needs internet"
        else:
            state = "not fetched"
        photos = str(len(dataset.files)) if dataset.files else "all"
        rows.append((dataset.id, photos, state, "yes" if dataset.default else "", ", ".join(dataset.sources)))
    print(f"photo folder: {root}")
    _print_table(("set", "photos", "state", "default", "source"), rows)
    return 0


def _datasets_fetch(args: argparse.Namespace) -> int:
    from lowkey_weights.datasets import fetch

    return _report_fetch(lambda: fetch(args.names, Path(args.dir) if args.dir else None))


def _detect(args: argparse.Namespace) -> int:
    from .images.decode import ImageError, decode_image
    from .faces.detect import load_detector

    detector = load_detector(args.device)
    status = 0
    for path in args.photos:
        try:
            image = decode_image(path)
        except (ImageError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        faces = detector.detect(image.pixels)
        print(f"{path}: {len(faces)} face(s)")
        for face in faces:
            x1, y1, x2, y2 = (round(float(v)) for v in face.box)
            print(f"  box ({x1}, {y1}, {x2}, {y2})  score {float(face.score):.3f}")
    return status


def _inputs(paths: list[str]) -> Iterator[tuple[Path, Path]]:
    """(photo, the folder it was found under or its own parent) for files and folders, recursively."""
    suffixes = _photo_suffixes()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for photo in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                                and not p.stem.endswith(PROTECTED_SUFFIX)):
                yield photo, path
        else:
            yield path, path.parent


def _output_path(photo: Path, base: Path, fmt: str, args: argparse.Namespace) -> Path:
    """Where the protected copy of `photo` goes; its extension follows the output format `fmt`
    (the input's suffix when not known yet)."""
    from .images.formats import BY_NAME

    extension = f".{BY_NAME[fmt].extension}" if fmt else photo.suffix
    if args.output:
        return Path(args.output)
    if args.out_dir:
        relative = photo.relative_to(base) if base in photo.parents else Path(photo.name)
        return Path(args.out_dir) / relative.with_suffix(extension)
    return photo.with_name(photo.stem + PROTECTED_SUFFIX + extension)


def _protect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .batching import measure_face_budget, protect_many
    from .images.decode import ImageError
    from .protect import resolve_device
    from .runtime import use_idle_cores
    from .settings import ProtectSettings

    settings = ProtectSettings.from_preset(args.preset, device=args.device, seed=args.seed)
    on_cpu = resolve_device(settings.device).type == "cpu"
    photos = list(_inputs(args.paths))
    if args.face_budget < 0:
        print("lowkey: --face-budget takes a number of faces, or 0 to measure one", file=sys.stderr)
        return 2
    if args.output and len(photos) != 1:
        print("lowkey: -o/--output takes exactly one input photo; use --out-dir for several", file=sys.stderr)
        return 2
    inputs = {photo.resolve() for photo, _ in photos}
    todo = [(photo, base) for photo, base in photos if not _would_overwrite(_output_path(photo, base, "", args),
                                                                            inputs, args)]
    failures = len(photos) - len(todo)
    if not todo:
        return 1 if failures else 0
    if on_cpu:
        use_idle_cores()                          # runtime.py: a busy machine needs fewer threads
    face_budget = args.face_budget or measure_face_budget(settings)
    overall = tqdm(total=len(todo), desc="photos", unit="photo", leave=False, disable=args.quiet or len(todo) < 2)
    bars: dict[int, tqdm] = {}

    def progress_of(index: int):
        def progress(stage: str, done: int, total: int) -> None:     # photo `index`'s own bar
            if stage == "attack":
                if index not in bars:              # (not setdefault: that would open a bar every call)
                    bars[index] = tqdm(total=total, desc=todo[index][0].name, unit="step", leave=False,
                                       disable=args.quiet)
                bar = bars[index]
                bar.n = done
                bar.refresh()
        return progress

    outcomes = protect_many((photo for photo, _ in todo), settings, progress_of, face_budget=face_budget,
                            before_attack=use_idle_cores if on_cpu else None)
    for index, result in outcomes:
        bars.pop(index, tqdm(disable=True)).close()
        overall.update(1)
        photo, base = todo[index]
        if isinstance(result, (ImageError, OSError)):
            tqdm.write(f"{photo}: error: {result}", file=sys.stderr)
            failures += 1
            continue
        if isinstance(result, BaseException):
            raise result
        target = _output_path(photo, base, result.format, args)
        if _would_overwrite(target, inputs, args):
            failures += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(result.data)
        tqdm.write(_summary(photo, target, result))
    overall.close()
    return 1 if failures else 0


def _would_overwrite(target: Path, inputs: set[Path], args: argparse.Namespace) -> bool:
    """True (and says so) when `target` is an input photo and --overwrite was not given."""
    if target.resolve() in inputs and not args.overwrite:
        print(f"lowkey: {target} is an input photo; pass --overwrite to replace it", file=sys.stderr)
        return True
    return False


def _summary(photo: Path, target: Path, result) -> str:
    if not result.faces:
        return f"{photo} -> {target}: no face found; metadata removed, pixels untouched ({result.seconds:.1f} s)"
    face_ssim = min(f.ssim for f in result.faces)
    face_psnr = min(f.psnr for f in result.faces)
    face_delta_e = max(f.delta_e_p95 for f in result.faces)
    face_shading = max(f.shading for f in result.faces)
    return (f"{photo} -> {target}: {result.face_count} face(s) protected in {result.seconds:.1f} s "
            f"on {result.device}; faces PSNR >= {face_psnr:.1f} dB, SSIM >= {face_ssim:.3f}, "
            f"ΔE2000 p95 <= {face_delta_e:.2f}, shading <= {face_shading:.2f} levels")


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.cli import run_eval

    return run_eval(args)


def _side_by_side(args: argparse.Namespace) -> int:
    from .images.decode import ImageError
    from .settings import ProtectSettings
    from .evaluation.side_by_side import compare, write_blind_pairs, write_sheet

    if not args.out and not args.blind_dir:
        print("lowkey side-by-side: give --out SHEET.png, --blind-dir FOLDER, or both", file=sys.stderr)
        return 2
    settings = ProtectSettings.from_preset(args.preset, **{"device": args.device, "seed": args.seed,
                                                           **dict(args.overrides)})
    comparisons, failures = [], 0
    for photo, _ in _inputs(args.paths):
        try:
            comparison = compare(photo, settings)
        except (ImageError, OSError) as exc:
            print(f"{photo}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        comparisons.append(comparison)
        worst = max((f.delta_e_p95 for f in comparison.faces), default=float("nan"))
        lowest_ssim = min((f.ssim for f in comparison.faces), default=float("nan"))
        line = (f"{photo}: {len(comparison.faces)} face(s), face ΔE2000 p95 <= {worst:.2f}, "
                f"face SSIM >= {lowest_ssim:.4f}")
        if any(f.warp_share for f in comparison.faces):          # geometry: its own budget, and the rest
            additive = max(f.additive_delta_e_p95 for f in comparison.faces)
            share = max(f.warp_share for f in comparison.faces)
            line += f" (additive part after the warp: <= {additive:.2f}; warp <= {100 * share:.2f} % of face width)"
        print(line)
    if comparisons and args.out:
        write_sheet(comparisons, args.preset, Path(args.out), args.amplify)
        print(f"wrote {args.out}")
    if comparisons and args.blind_dir:
        write_blind_pairs(comparisons, Path(args.blind_dir), args.seed)
        print(f"wrote {len(comparisons)} blind pair(s) to {args.blind_dir}; which side is protected: key.json")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowkey", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    from .batching import DEFAULT_FACE_BUDGET
    from .evaluation.report import DIFFERENCE_AMPLIFY
    from .settings import PRESETS

    protect = commands.add_parser("protect", help="protect every face in photos")
    protect.add_argument("paths", nargs="+", help="photos and folders (searched recursively)")
    where = protect.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="output file (one input photo only)")
    where.add_argument("--out-dir", help="folder for protected photos (default: beside each input, "
                       f"named NAME{PROTECTED_SUFFIX}.EXT)")
    protect.add_argument("--preset", choices=list(PRESETS), default="standard")
    protect.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    protect.add_argument("--seed", type=int, default=0)
    protect.add_argument("--overwrite", action="store_true", help="allow replacing an input photo")
    protect.add_argument("--face-budget", type=int, default=DEFAULT_FACE_BUDGET, metavar="N",
                         help="faces attacked together, taken from several photos (default "
                              f"{DEFAULT_FACE_BUDGET}; 0: measure what suits this device first)")
    protect.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    protect.set_defaults(run=_protect)

    weights = commands.add_parser("weights", help="model files: list, fetch")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    weights_commands.add_parser("list", help="every model file in the manifest").set_defaults(run=_weights_list)
    fetch = weights_commands.add_parser("fetch", help="fetch, verify and convert model files")
    fetch.add_argument("ids", nargs="*", help="model ids (default: every default model)")
    fetch.add_argument("--force", action="store_true", help="convert again even if up to date")
    fetch.set_defaults(run=_weights_fetch)

    datasets = commands.add_parser("datasets", help="face-photo sets for the tests and lowkey eval: list, fetch")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    listing = datasets_commands.add_parser("list", help="every set in weights/datasets.toml")
    fetch_set = datasets_commands.add_parser("fetch", help="fetch sets from their sources, every file verified")
    fetch_set.add_argument("names", nargs="*", help="set names (default: every default set; `lfw` is the full LFW)")
    for command in (listing, fetch_set):
        command.add_argument("--dir", help="folder that holds the sets, DIR/<set>/ (default data/faces in the "
                             "checkout, or $LOWKEY_DATA_DIR/faces)")
    listing.set_defaults(run=_datasets_list)
    fetch_set.set_defaults(run=_datasets_fetch)

    detect = commands.add_parser("detect", help="find faces in photos")
    detect.add_argument("photos", nargs="+")
    detect.add_argument("--device", default="cpu")
    detect.set_defaults(run=_detect)

    from .evaluation.cli import add_eval_arguments, add_override_argument

    sheet = commands.add_parser("side-by-side", help="pictures of photos before and after protection")
    sheet.add_argument("paths", nargs="+", help="photos and folders (searched recursively)")
    sheet.add_argument("--out", help="sheet PNG: each photo's central face, original | protected | change amplified")
    sheet.add_argument("--blind-dir", help="folder for full-size pairs in random order (key.json says which is which)")
    sheet.add_argument("--amplify", type=float, default=DIFFERENCE_AMPLIFY,
                       help=f"how much the change column amplifies (default {DIFFERENCE_AMPLIFY:g})")
    sheet.add_argument("--preset", choices=list(PRESETS), default="standard")
    sheet.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    sheet.add_argument("--seed", type=int, default=0, help="attack seed and the blind pairs' order")
    add_override_argument(sheet, "override a protection setting (as in lowkey eval; wins over --seed, --device)")
    sheet.set_defaults(run=_side_by_side)

    from lowkey_weights.datasets import faces_dir

    lfw_dev = faces_dir() / "lfw-dev"
    evaluate = commands.add_parser(
        "eval", help="identification accuracy with clean vs protected galleries",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"photos to measure on: `lowkey datasets fetch lfw-dev` puts LFW's dev set (212 people) in\n"
               f"{lfw_dev}; `lowkey datasets fetch lfw` the whole LFW (needs the internet). For example:\n"
               f"  lowkey eval {lfw_dev} --preset standard --protect-limit 30 --transforms none half+jpeg75")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(run=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
