"""The upstream-only model files: facenet-pytorch's InceptionResnetV1 sets and LPIPS's AlexNet trunk.

They need the internet, so stand-ins of the right shapes (random weights, saved the way upstream
saves them) are served as `url:file://` sources through the manifest's own entries and go through
the real fetch, converter and loader. Nothing here may download anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lpips
import pytest
import torch
import torch.hub
import torchvision

import lowkey_engine.evaluation.lpips_metric as lpips_metric
import lowkey_engine.faces.recognizers as recognizers
from lowkey_engine.faces.facenet import new_inception_resnet
from lowkey_engine.evaluation.lpips_metric import LPIPS_BACKBONE_ID, LPIPS_LINEAR_ID, load_lpips
from lowkey_engine.faces.paths import WEIGHTS_DIR_ENV, MissingWeightsError
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, SPECS, load_recognizer
from lowkey_weights.converters.facenet import CLASSIFIER_PREFIX
from lowkey_weights.fetch import FetchError, fetch_one, sha256_of
from lowkey_weights.manifest import ModelEntry, load_manifest

FACENET_IDS = ("facenet-vggface2", "facenet-casia")
VGGFACE2_IDENTITIES = 8631            # size of the classifier in the VGGFace2 release file
FACENET_SIZE, FACENET_DIM = 160, 512
LPIPS_LINEAR_FILE = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"   # as in the wheel
QUIET = {"log": lambda _: None}
NOISE_LEVELS = (0.02, 0.1, 0.3)      # Gaussian noise std, in pixel units of [0, 1]


def served_from(entry: ModelEntry, path: Path) -> ModelEntry:
    """The manifest `entry` with its one source file served from `path` (url:file://). A pinned
    digest becomes `path`'s; an entry without a published digest keeps recording it on first fetch."""
    (spec,) = entry.files
    local = dataclasses.replace(spec, source=f"url:{path.as_uri()}", path=path.name,
                                sha256=sha256_of(path) if spec.sha256 else "")
    return dataclasses.replace(entry, files=(local,))


def refuse_download(url, *args, **kwargs):
    raise AssertionError(f"tried to download {url}")


@pytest.fixture(scope="module", autouse=True)
def no_downloads(tmp_path_factory):
    """Any attempt by torch/torchvision to download weights fails instead (module scope: it must
    also cover the module-scoped fixtures that fetch, convert and load)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        patch.setattr(torch.hub, "download_url_to_file", refuse_download)
        yield


def use_weights_dir(monkeypatch, root: Path) -> None:
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(root))
    monkeypatch.setattr(recognizers, "_CACHE", {})     # loaders cache per device: start clean
    monkeypatch.setattr(lpips_metric, "_CACHE", {})


def randomise_running_stats(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """BatchNorm statistics start as 0/1; make them differ so copying them is actually checked."""
    for key, tensor in state.items():
        if key.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        elif key.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


# --- facenet-pytorch InceptionResnetV1 ------------------------------------------------------------

@pytest.fixture(scope="module")
def facenet_upstream(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A stand-in for 20180402-114759-vggface2.pt: an InceptionResnetV1 state dict with classifier."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    state = InceptionResnetV1(classify=True, num_classes=VGGFACE2_IDENTITIES).state_dict()
    randomise_running_stats(state, torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("upstream") / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def facenet_weights(facenet_upstream, tmp_path_factory) -> Path:
    """A weights folder where both facenet entries were fetched (from the stand-in) and converted."""
    path, _ = facenet_upstream
    root = tmp_path_factory.mktemp("weights")
    manifest = load_manifest()
    for model_id in FACENET_IDS:
        fetch_one(served_from(manifest[model_id], path), root, **QUIET)
    return root


@pytest.fixture(scope="module")
def facenet(facenet_weights):
    """'facenet-vggface2' loaded once, the way the engine loads it."""
    with pytest.MonkeyPatch.context() as patch:
        use_weights_dir(patch, facenet_weights)
        return load_recognizer("facenet-vggface2")


@pytest.mark.parametrize("model_id", FACENET_IDS)
def test_facenet_weights_are_the_checkpoints_without_classifier(facenet_weights, facenet_upstream,
                                                                monkeypatch, model_id):
    use_weights_dir(monkeypatch, facenet_weights)
    _, upstream = facenet_upstream
    loaded = load_recognizer(model_id).net.state_dict()
    expected = {k: v for k, v in upstream.items() if not k.startswith(CLASSIFIER_PREFIX)}
    assert len(expected) < len(upstream)                 # the stand-in did carry a classifier
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key


def test_facenet_embeddings_match_facenet_pytorch_on_its_own_standardisation(facenet, facenet_upstream):
    _, upstream = facenet_upstream
    reference = new_inception_resnet()
    reference.load_state_dict({k: v for k, v in upstream.items() if not k.startswith(CLASSIFIER_PREFIX)})
    faces = torch.rand(2, 3, FACENET_SIZE, FACENET_SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference.eval()((faces * 255 - 127.5) / 128)     # fixed_image_standardization
        got = facenet(faces)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_facenet_embeddings_are_unit_512d_and_batch_independent(facenet):
    faces = torch.rand(2, 3, FACENET_SIZE, FACENET_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = facenet(faces)
        alone = torch.cat([facenet(faces[i:i + 1]) for i in range(len(faces))])
    assert batched.shape == (2, FACENET_DIM)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=1e-5)


def test_facenet_gradients_reach_the_input_not_the_weights(facenet):
    faces = torch.rand(2, 3, FACENET_SIZE, FACENET_SIZE, requires_grad=True)
    facenet(faces)[:, 0].sum().backward()
    assert torch.isfinite(faces.grad).all()
    assert (faces.grad.abs().flatten(1).sum(1) > 0).all()
    assert not any(p.requires_grad for p in facenet.parameters())


def test_facenet_specs_are_160px_rgb_and_outside_the_default_ensemble():
    for model_id in FACENET_IDS:
        spec = SPECS[model_id]
        assert (spec.input_size, spec.embedding_dim, spec.channel_order) == (FACENET_SIZE, FACENET_DIM, "RGB")
        assert (spec.mean, spec.std) == (127.5, 128.0)
        assert model_id not in DEFAULT_ENSEMBLE
        assert all(0 < coordinate < FACENET_SIZE for point in spec.template for coordinate in point)


def test_facenet_checkpoint_of_the_wrong_shape_is_refused(facenet_upstream, tmp_path):
    _, upstream = facenet_upstream
    in_features = upstream["last_linear.weight"].shape[1]
    wrong = dict(upstream, **{"last_linear.weight": torch.zeros(FACENET_DIM // 2, in_features)})
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(wrong, path)
    root = tmp_path / "weights"
    with pytest.raises(FetchError, match=r"does not fit InceptionResnetV1.*last_linear\.weight"):
        fetch_one(served_from(load_manifest()["facenet-vggface2"], path), root, **QUIET)
    assert not list(root.glob("facenet-vggface2.pt*"))


def test_facenet_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    use_weights_dir(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError, match="lowkey weights fetch facenet-casia"):
        load_recognizer("facenet-casia")


# --- LPIPS ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def alexnet_upstream(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A stand-in for torchvision's alexnet-owt-7be5be79.pth: a random AlexNet state dict."""
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("upstream") / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def lpips_weights(alexnet_upstream, tmp_path_factory) -> Path:
    """A weights folder with the stand-in trunk and lpips' real linear layers fetched and converted."""
    path, _ = alexnet_upstream
    root = tmp_path_factory.mktemp("weights")
    manifest = load_manifest()
    fetch_one(served_from(manifest[LPIPS_BACKBONE_ID], path), root, **QUIET)
    fetch_one(served_from(manifest[LPIPS_LINEAR_ID], LPIPS_LINEAR_FILE), root, **QUIET)
    return root


@pytest.fixture(scope="module")
def lpips_distance(lpips_weights):
    """The LPIPS metric loaded once, the way the engine loads it."""
    with pytest.MonkeyPatch.context() as patch:
        use_weights_dir(patch, lpips_weights)
        return load_lpips()


def smooth_images(count: int, size: int = 64, seed: int = 4) -> torch.Tensor:
    """Photo-like test images: coarse random colours upsampled, RGB in [0, 1], (count, 3, size, size)."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_lpips_loads_the_fetched_trunk_and_linear_layers(lpips_distance, alexnet_upstream,
                                                         lpips_weights, monkeypatch):
    _, upstream = alexnet_upstream
    trunk = lpips_distance.lpips.net.state_dict()
    assert len(trunk) == len([k for k in upstream if k.startswith("features.")])
    for key, tensor in trunk.items():                        # "slice2.3.weight" <- "features.3.weight"
        assert torch.equal(tensor, upstream["features." + key.split(".", 1)[1]]), key
    released = torch.load(LPIPS_LINEAR_FILE, map_location="cpu", weights_only=True)
    for index, layer in enumerate(lpips_distance.lpips.lins):
        assert torch.equal(layer.model[1].weight, released[f"lin{index}.model.1.weight"])
    use_weights_dir(monkeypatch, lpips_weights)
    assert load_lpips() is load_lpips()                       # cached


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(lpips_distance):
    images = smooth_images(2)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        same = lpips_distance(images, images)
        distances = [lpips_distance(images, (images + level * noise).clamp(0, 1)) for level in NOISE_LEVELS]
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-7, rtol=0)
    for smaller, larger in zip(distances, distances[1:]):
        assert (smaller < larger).all(), (smaller, larger)
    assert (distances[0] > 0).all()


def test_lpips_takes_pixels_in_0_1_where_lpips_takes_minus_1_to_1(lpips_distance):
    a, b = smooth_images(2, seed=6), smooth_images(2, seed=7)
    with torch.no_grad():
        expected = lpips_distance.lpips(a * 2 - 1, b * 2 - 1).flatten()
        got = lpips_distance(a, b)
        unscaled = lpips_distance.lpips(a, b).flatten()
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(unscaled, expected)       # the scaling matters, so this test can fail


def test_lpips_gradients_reach_the_input_not_the_weights(lpips_distance):
    images = smooth_images(2)
    changed = (images + 0.05 * torch.randn(images.shape)).clamp(0, 1).requires_grad_(True)
    lpips_distance(images, changed).sum().backward()
    assert torch.isfinite(changed.grad).all() and changed.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips_distance.parameters())


def test_lpips_trunk_of_the_wrong_shape_is_refused(alexnet_upstream, tmp_path):
    _, upstream = alexnet_upstream
    features = {k: v for k, v in upstream.items() if k.startswith("features.")}
    features["features.3.weight"] = torch.zeros(192, 32, 5, 5)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(features, path)
    with pytest.raises(FetchError, match=r"slice2\.3\.weight"):
        fetch_one(served_from(load_manifest()[LPIPS_BACKBONE_ID], path), tmp_path / "weights", **QUIET)


def test_lpips_without_its_backbone_raises_naming_the_fetch_command(lpips_weights, tmp_path, monkeypatch):
    # Only the linear layers (fetchable from PyPI) are there: LPIPS must not run on a random trunk.
    root = tmp_path / "weights"
    root.mkdir()
    linear = f"{LPIPS_LINEAR_ID}.pt"
    (root / linear).write_bytes((lpips_weights / linear).read_bytes())
    use_weights_dir(monkeypatch, root)
    with pytest.raises(MissingWeightsError, match=f"lowkey weights fetch {LPIPS_BACKBONE_ID}"):
        load_lpips()
