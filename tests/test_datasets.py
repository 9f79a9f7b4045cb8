"""The photo sets' fetch step (`lowkey datasets`): the manifest pins exactly the mirror's files, a
fetch lays a set out verified file by file, and what cannot be reached fails naming it.

No test downloads: repository files come from a mirror folder (made here, or the real photo mirror
$LOWKEY_DATA_MIRROR), and `urllib.request.urlopen` is replaced where a download would be tried.
"""

import hashlib
import io
import tarfile
import urllib.error
import urllib.request

import pytest

from lowkey_engine.cli import main as lowkey
from lowkey_weights.datasets import (DATA_DIR_ENV, DATA_MIRROR_ENV, DATASETS_MANIFEST, MIRROR_FACES, Dataset,
                                     PhotoFile, RepositoryTree, fetch_dataset, is_fetched, load_datasets)
from lowkey_weights.fetch import FetchError
from tools.make_data_manifest import render

REPOSITORY = "github:someone/photos@0123abcd"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_internet(monkeypatch) -> list[str]:
    """Make every download fail as it does on a machine without the internet; returns the
    addresses that were tried."""
    tried = []

    def refuse(request, timeout=None):
        tried.append(request.full_url)
        raise urllib.error.URLError("no internet in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


@pytest.fixture
def small_set(tmp_path, monkeypatch):
    """A two-identity set whose files are in a mirror folder made here: (Dataset, {path: bytes})."""
    photos = {"Ann/Ann_0001.jpg": b"ann one", "Ann/Ann_0002.jpg": b"ann two", "Bob/Bob_0001.jpg": b"bob"}
    mirror = tmp_path / "mirror"
    for path, data in photos.items():
        copy = mirror / MIRROR_FACES / "small" / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
    monkeypatch.setenv(DATA_MIRROR_ENV, str(mirror))
    files = tuple(PhotoFile(path=path, source=REPOSITORY, member=f"faces/{path}", sha256=_sha(data))
                  for path, data in photos.items())
    return Dataset(id="small", description="a small set", terms="cite us", default=True, files=files), photos


def test_the_manifest_pins_exactly_the_mirrors_files_with_their_sources(data_mirror):
    assert DATASETS_MANIFEST.read_text() == render(data_mirror / MIRROR_FACES), \
        "weights/datasets.toml is not what tools/make_data_manifest.py makes from the mirror: run it again"
    sets = load_datasets()
    assert {"lfw-dev", "five-celebrity", "photos-deepface", "photos-group", "lfw"} <= set(sets)
    lfw_dev = sets["lfw-dev"]
    assert len(lfw_dev.files) == 1275 and len({f.path.split("/")[0] for f in lfw_dev.files}) == 212
    assert all(f.member == f"images_deepfunneled/{f.path}" for f in lfw_dev.files)
    url = lfw_dev.files[0].source_file("lfw-dev").locator
    assert url.startswith("https://raw.githubusercontent.com/umass-vis-lfw/umass-vis-lfw.github.io/2a620cd8/"
                          "images_deepfunneled/")
    assert {f.source for f in sets["photos-group"].files} == {"npm:@vladmandic/face-api@1.7.15",
                                                             "pypi-sdist:face_recognition==1.3.0"}
    for words in ("Labeled Faces in the Wild", "Learning to Align from Scratch", "commercial"):
        assert words in lfw_dev.terms
    assert sets["lfw"].tree.folder == "images_deepfunneled" and sets["lfw"].tree.check_against == "lfw-dev"


def test_a_fetch_lays_the_set_out_verified_prints_its_terms_and_is_kept_on_the_next(tmp_path, small_set):
    dataset, photos = small_set
    root = tmp_path / "faces"
    messages = []
    folder = fetch_dataset(dataset, root, log=messages.append)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == photos
    assert any("cite us" in m for m in messages)
    assert any("3 copied from the mirror" in m for m in messages)
    assert is_fetched(dataset, root)
    (folder / "Bob" / "Bob_0001.jpg").write_bytes(b"damaged")      # damaged: fetched again
    (folder / "Bob" / "stale.jpg").write_bytes(b"not in the manifest")
    messages.clear()
    fetch_dataset(dataset, root, log=messages.append)
    assert (folder / "Bob" / "Bob_0001.jpg").read_bytes() == b"bob" and not (folder / "Bob" / "stale.jpg").exists()
    assert any("2 already there, 1 copied" in m for m in messages)


def test_a_mirror_copy_with_another_digest_is_refused_and_the_set_is_not_fetched(tmp_path, small_set):
    dataset, _ = small_set
    files = (*dataset.files[:2], PhotoFile(**{**dataset.files[2].__dict__, "sha256": "0" * 64}))
    broken = Dataset(**{**dataset.__dict__, "files": files})
    root = tmp_path / "faces"
    with pytest.raises(FetchError, match="checksum mismatch.*Bob_0001.jpg"):
        fetch_dataset(broken, root, log=lambda _: None)
    assert not (root / "small" / "Bob" / "Bob_0001.jpg").exists()
    assert not is_fetched(broken, root)


def test_a_download_with_another_digest_is_not_kept_and_a_failed_refetch_unmarks_the_set(
        tmp_path, small_set, monkeypatch):
    dataset, photos = small_set
    root = tmp_path / "faces"
    fetch_dataset(dataset, root, log=lambda _: None)
    (root / "small" / "Bob" / "Bob_0001.jpg").write_bytes(b"damaged")
    monkeypatch.delenv(DATA_MIRROR_ENV)
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: io.BytesIO(b"not bob"))
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_dataset(dataset, root, log=lambda _: None)
    assert not (root / "small" / "Bob" / "Bob_0001.jpg").exists()
    assert not is_fetched(dataset, root)


def test_without_mirror_or_internet_the_error_names_the_upstream_address(tmp_path, small_set, monkeypatch):
    dataset, _ = small_set
    monkeypatch.delenv(DATA_MIRROR_ENV)
    tried = _no_internet(monkeypatch)
    with pytest.raises(FetchError, match=r"https://raw\.githubusercontent\.com/someone/photos/0123abcd/faces/"
                                         r"Ann/Ann_0001\.jpg failed.*needs the internet"):
        fetch_dataset(dataset, tmp_path / "faces", log=lambda _: None)
    assert tried == ["https://raw.githubusercontent.com/someone/photos/0123abcd/faces/Ann/Ann_0001.jpg"]


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _tree_set() -> Dataset:
    return Dataset(id="whole", description="the whole set", terms="cite us", default=False,
                   tree=RepositoryTree(source=REPOSITORY, folder="faces", check_against="small"))


def _serve(monkeypatch, body: bytes) -> list[str]:
    served = []

    def respond(request, timeout=None):
        served.append(request.full_url)
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", respond)
    return served


def test_a_tree_comes_from_the_repository_archive_and_must_hold_the_listed_set(tmp_path, small_set, monkeypatch):
    listed, photos = small_set
    top = "photos-0123abcd"
    members = {f"{top}/faces/{path}": data for path, data in photos.items()}
    members |= {f"{top}/faces/Cem/Cem_0001.jpg": b"cem", f"{top}/README.md": b"not a photo"}
    served = _serve(monkeypatch, _archive(members))
    root = tmp_path / "faces"
    folder = fetch_dataset(_tree_set(), root, log=lambda _: None, sets={"small": listed})
    assert served == ["https://codeload.github.com/someone/photos/tar.gz/0123abcd"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg", "Cem/Cem_0001.jpg"]
    assert is_fetched(_tree_set(), root)


def test_a_tree_without_the_listed_sets_files_is_refused(tmp_path, small_set, monkeypatch):
    listed, photos = small_set
    other = {f"photos-0123abcd/faces/{path}": data + b" changed" for path, data in photos.items()}
    _serve(monkeypatch, _archive(other))
    root = tmp_path / "faces"
    with pytest.raises(FetchError, match="does not hold Ann/Ann_0001.jpg with the sha256 small pins"):
        fetch_dataset(_tree_set(), root, log=lambda _: None, sets={"small": listed})
    assert not (root / "whole").exists() and not is_fetched(_tree_set(), root)


def test_lowkey_datasets_fetch_lfw_without_the_internet_fails_naming_the_archive(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    tried = _no_internet(monkeypatch)
    assert lowkey(["datasets", "fetch", "lfw"]) == 1
    out, err = capsys.readouterr()
    archive = "https://codeload.github.com/umass-vis-lfw/umass-vis-lfw.github.io/tar.gz/2a620cd8"
    assert tried == [archive]
    assert f"lfw: FAILED: download of {archive} failed" in out and "needs the internet" in out
    assert "Learning to Align from Scratch" in out          # the terms, printed before the fetch
    assert "could not fetch: lfw" in err
    assert not (tmp_path / "data" / "faces" / "lfw").exists()


def test_lowkey_datasets_list_and_unknown_names(tmp_path, small_set, monkeypatch, capsys):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    assert lowkey(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "lfw-dev" in out and "needs internet" in out and str(tmp_path / "data" / "faces") in out
    assert lowkey(["datasets", "fetch", "no-such-set"]) == 2
    assert "unknown set(s) ['no-such-set']" in capsys.readouterr().err
