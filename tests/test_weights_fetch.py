"""The fetch step: verifies checksums, converts once, leaves nothing half-written, resumes.

Uses `url:file://...` sources so it runs without any registry; the npm/PyPI paths run for real in
setup (install/setup.sh) before the test suite.
"""

import hashlib
import tarfile
import zipfile

import pytest

from lowkey_weights.fetch import RECORDED_DIGEST_SUFFIX, FetchError, _read_member, fetch_one, is_fetched
from lowkey_weights.manifest import (VERIFY_RECORD_ON_FIRST_FETCH, VERIFY_SHA256, ModelEntry, SourceFile,
                                     load_manifest)


def entry_for(path, sha256, converter="copy", output="sample", verify=VERIFY_SHA256):
    source = SourceFile(name=path.name, source=f"url:{path.as_uri()}", path=path.name, sha256=sha256,
                        verify=verify)
    return ModelEntry(id="test-model", role="sample", description="", licence="", converter=converter,
                      files=(source,), output=output)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "upstream" / "model.bin"
    path.parent.mkdir()
    path.write_bytes(b"weights" * 100)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_converts_once_and_is_idempotent(tmp_path, source):
    path, digest = source
    root = tmp_path / "weights"
    entry = entry_for(path, digest)
    out = fetch_one(entry, root, log=lambda _: None)
    assert (out / "model.bin").read_bytes() == path.read_bytes()
    assert is_fetched(entry, root)
    path.unlink()                                 # a second fetch must not need the source again
    messages = []
    fetch_one(entry, root, log=messages.append)
    assert any("up to date" in m for m in messages)


def test_checksum_mismatch_is_refused_and_nothing_is_written(tmp_path, source):
    path, _ = source
    root = tmp_path / "weights"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_one(entry_for(path, "0" * 64), root, log=lambda _: None)
    assert not (root / "sample").exists()


def test_failed_conversion_leaves_no_output_and_a_retry_reuses_the_download(tmp_path, source):
    path, digest = source
    root = tmp_path / "weights"
    with pytest.raises(FetchError, match="converter 'mtcnn' failed"):
        fetch_one(entry_for(path, digest, converter="mtcnn", output="broken.pt"), root, log=lambda _: None)
    assert not list(root.glob("broken.pt*"))
    path.unlink()                                 # the retry works from the cache alone
    out = fetch_one(entry_for(path, digest), root, log=lambda _: None)
    assert (out / "model.bin").exists()


def test_unpublished_digest_is_recorded_on_first_fetch_and_held_to_afterwards(tmp_path, source):
    path, digest = source
    root = tmp_path / "weights"
    entry = entry_for(path, "", verify=VERIFY_RECORD_ON_FIRST_FETCH)
    messages = []
    fetch_one(entry, root, log=messages.append)
    recorded = root / "cache" / "url" / (path.name + RECORDED_DIGEST_SUFFIX)
    assert recorded.read_text().strip() == digest
    assert any(digest in m for m in messages)           # shown, so it can be pinned in the manifest
    # Upstream changes the file; a later download of it (cache cleared) is refused.
    path.write_bytes(b"tampered" * 100)
    (root / "cache" / "url" / path.name).unlink()
    with pytest.raises(FetchError, match="checksum mismatch.*recorded at first fetch"):
        fetch_one(entry, root, force=True, log=lambda _: None)


@pytest.mark.parametrize("source_line, problem", [
    ('source = "url:https://example.org/m.pt", path = "m.pt", sha256 = "", verify = "sometimes"',
     "unknown verify mode"),
    ('source = "pypi:pkg==1.0", path = "pkg/m.pt", sha256 = "", verify = "record-on-first-fetch"',
     "only for url sources"),
    ('source = "url:https://example.org/m.pt", path = "m.pt", sha256 = "' + "ab" * 32
     + '", verify = "record-on-first-fetch"', "only for url sources"),
])
def test_manifest_refuses_misused_verify_modes(tmp_path, source_line, problem):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[model]]\nid = "m"\nrole = "sample"\ndescription = ""\nlicence = "MIT"\n'
                        f'converter = "copy"\nfiles = [ {{ name = "m", {source_line} }} ]\n')
    with pytest.raises(ValueError, match=problem):
        load_manifest(manifest)


def test_members_are_read_from_wheels_tarballs_and_sdists(tmp_path):
    wheel = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/a.pt", b"A")
    tgz = tmp_path / "pkg.tgz"
    member = tmp_path / "b.bin"
    member.write_bytes(b"B")
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(member, arcname="pkg-1.0/models/b.bin")     # sdist-style top folder
    assert _read_member(wheel, "pkg/data/a.pt") == b"A"
    assert _read_member(tgz, "models/b.bin") == b"B"
    with pytest.raises(FetchError, match="not inside"):
        _read_member(wheel, "missing.pt")


def test_manifest_entries_are_complete():
    manifest = load_manifest()
    assert {"mtcnn", "mfn-faceplugin", "mfn-expo", "hse-faceres", "hse-faceres-deep",
            "dlib-resnet"} <= set(manifest)
    for entry in manifest.values():
        assert entry.licence and entry.converter and entry.files
        for f in entry.files:
            unpublished = f.verify == VERIFY_RECORD_ON_FIRST_FETCH
            assert len(f.sha256) == 64 or (entry.needs_internet and (len(f.sha256) >= 8 or unpublished))
