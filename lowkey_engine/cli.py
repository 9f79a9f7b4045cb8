"""`lowkey`: the engine's command line.

    lowkey weights list                 what model files exist, where from, fetched or not
    lowkey weights fetch [IDS] [--force]
    lowkey detect PHOTO...              faces found, with boxes and landmarks
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _weights_list(args: argparse.Namespace) -> int:
    from lowkey_weights.fetch import is_fetched
    from lowkey_weights.manifest import load_manifest

    rows = []
    for entry in load_manifest().values():
        if is_fetched(entry):
            state = "ready"
        elif entry.needs_internet:
            state = "needs internet"
        else:
            state = "not fetched"
        sources = ", ".join(sorted({f.source for f in entry.files}))
        rows.append((entry.id, entry.role, state, "yes" if entry.default else "", sources))
    header = ("id", "role", "state", "default", "source")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from lowkey_weights.fetch import FetchError, fetch

    try:
        failed = fetch(args.ids, force=args.force)
    except FetchError as exc:
        print(f"lowkey: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"lowkey: could not fetch: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _detect(args: argparse.Namespace) -> int:
    from .decode import ImageError, decode_image
    from .detect import load_detector

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowkey", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    weights = commands.add_parser("weights", help="model files: list, fetch")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    weights_commands.add_parser("list", help="every model file in the manifest").set_defaults(run=_weights_list)
    fetch = weights_commands.add_parser("fetch", help="fetch, verify and convert model files")
    fetch.add_argument("ids", nargs="*", help="model ids (default: every default model)")
    fetch.add_argument("--force", action="store_true", help="convert again even if up to date")
    fetch.set_defaults(run=_weights_fetch)

    detect = commands.add_parser("detect", help="find faces in photos")
    detect.add_argument("photos", nargs="+")
    detect.add_argument("--device", default="cpu")
    detect.set_defaults(run=_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
