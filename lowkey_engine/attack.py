"""The LowKey attack (Cherepanova et al., ICLR 2021, arXiv 2101.07922), on batches of face crops.

Maximise, over an ensemble of recognizers, the squared distance between the unit embedding of the
clean face and that of the protected face, each member seeing both the protected face and a
Gaussian-smoothed copy of it; minus a perceptual penalty (weight x (1 - SSIM)); signed-gradient
steps from a small random start, optionally within an L-infinity budget. Beyond the paper, every
step sees the face after a random upload pipeline (downscale, JPEG, sub-pixel shift), so the
protection survives what social sites do to photos.

    attack = LowKeyAttack(recognizers, steps=40)
    change = attack(crops, landmarks, mask)          # protected = clamp(crops + mask * change)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, fields

import torch
from torch import Tensor

from .perceptual import ssim
from .recognizers import Recognizer
from .settings import ProtectSettings
from .transforms import downscale_and_back, gaussian_blur, jpeg_approx

#: progress(stage, done, total)
ProgressCallback = Callable[[str, int, int], None]

#: Knob defaults: the `standard` preset's, kept in one place (settings.py).
_DEFAULTS = ProtectSettings()

#: Chance that each upload-pipeline transform is applied in a step (expectation over transforms).
TRANSFORM_PROBABILITY = 0.5


@dataclass
class LowKeyAttack:
    """Signed-gradient LowKey attack. Knobs mean what `ProtectSettings`' fields of the same
    names mean (settings.py); their defaults are the `standard` preset's."""

    recognizers: Sequence[Recognizer]
    _: KW_ONLY
    steps: int = _DEFAULTS.steps
    step_size: float = _DEFAULTS.step_size
    epsilon: float | None = _DEFAULTS.epsilon
    random_start: float = _DEFAULTS.random_start
    penalty_weight: float = _DEFAULTS.penalty_weight
    blur_kernel: int = _DEFAULTS.blur_kernel
    blur_sigma: float = _DEFAULTS.blur_sigma
    robust: bool = _DEFAULTS.robust
    jpeg_quality: tuple[int, int] = _DEFAULTS.jpeg_quality
    downscale: tuple[float, float] = _DEFAULTS.downscale
    shift_px: float = _DEFAULTS.shift_px
    seed: int = _DEFAULTS.seed

    def __post_init__(self):
        if not self.recognizers:
            raise ValueError("the attack needs at least one recognizer")
        self.recognizers = list(self.recognizers)

    @classmethod
    def from_settings(cls, settings: ProtectSettings, recognizers: Sequence[Recognizer]) -> "LowKeyAttack":
        knobs = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name != "recognizers"}
        return cls(recognizers, **knobs)

    def _uniform(self, generator: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    def _upload_pipeline(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        """One random draw of what an upload may do: downscale, then JPEG re-encoding."""
        if not self.robust:
            return faces
        if float(torch.rand((), generator=generator)) < TRANSFORM_PROBABILITY:
            faces = downscale_and_back(faces, self._uniform(generator, *self.downscale))
        if float(torch.rand((), generator=generator)) < TRANSFORM_PROBABILITY:
            quality = round(self._uniform(generator, *self.jpeg_quality))
            faces = jpeg_approx(faces, quality)
        return faces

    def _embedding_distance(self, faces: Tensor, landmarks: Tensor, clean: list[Tensor]) -> Tensor:
        """Per face (N,): sum over members of squared distances to the clean embeddings, for the
        faces and for their Gaussian-smoothed copies."""
        smoothed = gaussian_blur(faces, self.blur_kernel, self.blur_sigma)
        total = faces.new_zeros(faces.shape[0])
        for recognizer, reference in zip(self.recognizers, clean):
            both = recognizer.embed(torch.cat([faces, smoothed]), torch.cat([landmarks, landmarks]))
            sharp, blurred = both.chunk(2)
            total = total + (sharp - reference).pow(2).sum(1) + (blurred - reference).pow(2).sum(1)
        return total

    def __call__(self, crops: Tensor, landmarks: Tensor, mask: Tensor | None = None,
                 progress: ProgressCallback | None = None) -> Tensor:
        """The change to add to each crop.

        crops: (N, 3, S, S) RGB in [0, 1]; landmarks: (N, 5, 2) in crop pixels; mask: (N, 1, S, S)
        in [0, 1], how much of the change reaches each pixel (feathering); None = everywhere.
        Returns (N, 3, S, S) with crops + mask * change inside [0, 1] and |change| <= epsilon.
        """
        generator = torch.Generator().manual_seed(self.seed)
        crops = crops.detach()
        mask = torch.ones_like(crops[:, :1]) if mask is None else mask.detach()
        with torch.no_grad():
            clean = [r.embed(crops, landmarks) for r in self.recognizers]
        start = (torch.rand(crops.shape, generator=generator) * 2 - 1) * self.random_start
        change = self._project(start.to(crops.device, crops.dtype), crops, mask)
        for step in range(self.steps):
            change.requires_grad_(True)
            protected = crops + mask * change
            jitter = (torch.rand(landmarks.shape[0], 1, 2, generator=generator) * 2 - 1) * self.shift_px
            seen = self._upload_pipeline(protected, generator)
            distance = self._embedding_distance(seen, landmarks + jitter.to(landmarks), clean)
            penalty = self.penalty_weight * (1 - ssim(protected, crops, weight=mask))
            objective = (distance - penalty).sum()
            gradient, = torch.autograd.grad(objective, change)
            with torch.no_grad():
                change = self._project(change + self.step_size * gradient.sign(), crops, mask)
            if progress:
                progress("attack", step + 1, self.steps)
        return change.detach()

    def _project(self, change: Tensor, crops: Tensor, mask: Tensor) -> Tensor:
        """So that crops + mask * change stays inside [0, 1], then into the L-infinity budget
        (shrinking towards zero keeps the first condition)."""
        protected = (crops + mask * change).clamp(0, 1)
        change = torch.where(mask > 0, (protected - crops) / mask.clamp_min(1e-6), change)
        if self.epsilon is not None:
            change = change.clamp(-self.epsilon, self.epsilon)
        return change
