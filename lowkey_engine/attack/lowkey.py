"""The LowKey attack (Cherepanova et al., ICLR 2021, arXiv 2101.07922), on batches of face crops.

Maximise, over an ensemble of recognizers, the squared distance between the unit embedding of the
clean face and that of the protected face, each member seeing both the protected face and a
Gaussian-smoothed copy of it; minus a perceptual penalty (weight x (1 - SSIM)); signed-gradient
steps from a small random start, within a per-pixel budget (budget.py: by default a lightness-only
change, each pixel within a CIEDE2000 cap, so the change stays where the eye does not see it).
The distance is averaged over the members, so adding one does not loosen the penalty's hold.

Beyond the paper, for transfer to recognizers it never saw and robustness to uploads:
- every step sees the face after a random upload pipeline (downscale, JPEG), so the protection
  survives what social sites do to photos;
- every step aligns the face a little differently (shift, zoom, rotation of the landmarks), as
  other recognizers crop faces with other templates;
- momentum on the normalised gradient (MI-FGSM, Dong et al. 2018) steadies the direction;
- the steps shrink along a half cosine (large early steps travel, small late ones settle inside
  the budget instead of hopping across it);
- `views` random draws of upload pipeline and alignment per step, all in one batch per member
  (sharp and smoothed together), which the CPU runs faster per image than separate passes;
- `members_per_step` < the ensemble's size: each step attacks a random subset of the members (a
  stochastic ensemble: the cost of a few members, the diversity of all);
- `warp_px` > 0: beside the additive change, a smooth sub-pixel warp of the face (warp.py);
- `warp_face_share` > 0: geometry with its own budget instead, a warp of the nose, mouth and
  cheeks by at most that share of the face's width that holds the eyes, brows and outline still
  (warp.GuidedWarp, face_parts.py).
With a warp, the additive change's budget and penalties are measured against the *warped* clean
face (the change added after the warp), so the geometry is paid for by its own budget only.
- `diversity`: a random transform of the aligned faces each surrogate sees (diversity.py: resize
  and pad, block shuffle, per-block transforms), for transfer to recognizers never attacked.

    attack = LowKeyAttack(recognizers, steps=60)
    change = attack(crops, landmarks, mask)          # protected = crops + change, in [0, 1]
    parts = attack.run(crops, landmarks, mask, face_widths=widths)   # the warp and additive parts
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, fields

import torch
from torch import Tensor
from torch.profiler import record_function

from .budget import PerceptualBudget
from .perceptual import SHADING_SIGMA_PER_FACE, shading_energy, ssim
from ..faces.recognizers import Recognizer
from ..settings import ProtectSettings
from .diversity import InputDiversity
from .transforms import downscale_and_back, gaussian_blur, jpeg_approx
from .warp import GuidedWarp, SmoothWarp, largest_displacement_share

#: progress(stage, done, total)
ProgressCallback = Callable[[str, int, int], None]

#: Knob defaults: the `standard` preset's, kept in one place (settings.py).
_DEFAULTS = ProtectSettings()

#: Chance that each upload-pipeline transform is applied in a step (expectation over transforms).
TRANSFORM_PROBABILITY = 0.5
#: The warp's first step, as a share of `warp_px` (its steps shrink on the additive change's schedule).
WARP_STEP_SHARE = 0.25


def combine_members(distances: Tensor, focus: float | None) -> Tensor:
    """The ensemble's distance per face from its members' (M, N): their mean (`focus` None), or a
    soft minimum at temperature `focus` (squared-distance units), between the mean (large focus)
    and the smallest (small focus), so the members that still recognize the face weigh most."""
    if focus is None:
        return distances.mean(0)
    return -focus * (torch.logsumexp(-distances / focus, 0) - math.log(distances.shape[0]))


@dataclass
class LowKeyAttack:
    """Signed-gradient LowKey attack. Knobs mean what `ProtectSettings`' fields of the same
    names mean (settings.py); their defaults are the `standard` preset's. `shading_sigma` (crop
    pixels) is the shading penalty's blur: SHADING_SIGMA_PER_FACE of the working face's width."""

    recognizers: Sequence[Recognizer]
    _: KW_ONLY
    steps: int = _DEFAULTS.steps
    step_size: float = _DEFAULTS.step_size
    step_decay: float = _DEFAULTS.step_decay
    epsilon: float | None = _DEFAULTS.epsilon
    colour: str = _DEFAULTS.colour
    texture_floor: float = _DEFAULTS.texture_floor
    texture_reference: float = _DEFAULTS.texture_reference
    delta_e_cap: float | None = _DEFAULTS.delta_e_cap
    momentum: float = _DEFAULTS.momentum
    random_start: float = _DEFAULTS.random_start
    penalty_weight: float = _DEFAULTS.penalty_weight
    shading_weight: float = _DEFAULTS.shading_weight
    shading_sigma: float = SHADING_SIGMA_PER_FACE * _DEFAULTS.working_face_px
    blur_kernel: int = _DEFAULTS.blur_kernel
    blur_sigma: float = _DEFAULTS.blur_sigma
    robust: bool = _DEFAULTS.robust
    jpeg_quality: tuple[int, int] = _DEFAULTS.jpeg_quality
    downscale: tuple[float, float] = _DEFAULTS.downscale
    shift_px: float = _DEFAULTS.shift_px
    align_zoom: float = _DEFAULTS.align_zoom
    align_rotation_deg: float = _DEFAULTS.align_rotation_deg
    views: int = _DEFAULTS.views
    members_per_step: int | None = _DEFAULTS.members_per_step
    member_focus: float | None = _DEFAULTS.member_focus
    smooth_every_view: bool = _DEFAULTS.smooth_every_view
    warp_px: float = _DEFAULTS.warp_px
    warp_face_share: float = _DEFAULTS.warp_face_share
    warp_grid: int = _DEFAULTS.warp_grid
    diversity: str = _DEFAULTS.diversity
    diversity_probability: float = _DEFAULTS.diversity_probability
    seed: int = _DEFAULTS.seed

    def __post_init__(self):
        if not self.recognizers:
            raise ValueError("the attack needs at least one recognizer")
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if self.member_focus is not None and self.member_focus <= 0:
            raise ValueError(f"member_focus must be > 0 or None, got {self.member_focus}")
        if self.members_per_step is not None and self.members_per_step < 1:
            raise ValueError(f"members_per_step must be >= 1 or None, got {self.members_per_step}")
        self.recognizers = list(self.recognizers)
        self.budget = PerceptualBudget(self.epsilon, self.colour, self.texture_floor, self.texture_reference,
                                       self.delta_e_cap)
        if self.warp_px > 0 and self.warp_face_share > 0:
            raise ValueError("warp_px and warp_face_share are two kinds of warp: set at most one")
        self.warp = (GuidedWarp(grid=self.warp_grid, face_share=self.warp_face_share) if self.warp_face_share > 0
                     else SmoothWarp(grid=self.warp_grid, max_px=self.warp_px))
        self.input_diversity = InputDiversity(self.diversity, self.diversity_probability)

    @classmethod
    def from_settings(cls, settings: ProtectSettings, recognizers: Sequence[Recognizer],
                      working_face_px: int | None = None) -> "LowKeyAttack":
        """The attack `settings` describe, on crops whose faces are `working_face_px` wide
        (default: settings.working_face_px): the knobs in working pixels (the smoothed branch's
        blur, the alignment shift, the shading blur) scale with it."""
        knobs = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        face_px = working_face_px or settings.working_face_px
        scale = face_px / settings.working_face_px
        blur_sigma = settings.blur_sigma * scale
        blur_kernel = settings.blur_kernel if scale == 1 else 2 * round((settings.blur_kernel // 2) * scale) + 1
        return cls(recognizers, **{**knobs, "blur_sigma": blur_sigma, "blur_kernel": blur_kernel,
                                   "shift_px": settings.shift_px * scale, "warp_px": settings.warp_px * scale},
                   shading_sigma=SHADING_SIGMA_PER_FACE * face_px)

    def step_size_at(self, step: int) -> float:
        """Size of step `step` (0-based), [0, 1] pixel units: `step_size` at the first step,
        `step_decay * step_size` at the last, along a half cosine in between."""
        progress = step / max(self.steps - 1, 1)
        share = self.step_decay + (1 - self.step_decay) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.step_size * share

    def _uniform(self, generator: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    def _view(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        """One view of the protected faces: an upload-pipeline draw, and, when the smoothed branch
        is not run for every view, LowKey's Gaussian smoothing at random."""
        faces = self._upload_pipeline(faces, generator)
        if not self.smooth_every_view and float(torch.rand((), generator=generator)) < TRANSFORM_PROBABILITY:
            faces = gaussian_blur(faces, self.blur_kernel, self.blur_sigma)
        return faces

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

    def _members(self, generator: torch.Generator) -> list[int]:
        """Which ensemble members this step attacks: all, or a random `members_per_step` of them."""
        count = len(self.recognizers)
        if self.members_per_step is None or self.members_per_step >= count:
            return list(range(count))
        return sorted(torch.randperm(count, generator=generator)[:self.members_per_step].tolist())

    def _embedding_distance(self, views: Tensor, landmarks: Tensor, clean: list[Tensor], members: list[int],
                            generator: torch.Generator) -> Tensor:
        """Per face (N,): the mean over `members` (or their soft minimum, `member_focus`) of the mean
        over the views of the squared distance to the clean embedding, for the view plus for its
        Gaussian-smoothed copy (`smooth_every_view`; else once per view, doubled to the same
        scale, the views already smoothed at random). views (V*N, 3, S, S) and landmarks
        (V*N, 5, 2) hold V views of the N faces, view-major."""
        faces = clean[0].shape[0]
        branches = 2 if self.smooth_every_view else 1
        if self.smooth_every_view:
            with record_function("lowkey:smoothed branch"):
                views = torch.cat([views, gaussian_blur(views, self.blur_kernel, self.blur_sigma)])
                landmarks = torch.cat([landmarks, landmarks])
        per_member = []
        for index in members:
            recognizer = self.recognizers[index]
            with record_function("lowkey:surrogates"):
                if self.input_diversity.enabled:
                    embedded = recognizer.embed(views, landmarks,
                                                augment=lambda aligned: self.input_diversity(aligned, generator))
                else:
                    embedded = recognizer.embed(views, landmarks)
            squared = (embedded.view(-1, faces, embedded.shape[-1]) - clean[index]).pow(2).sum(-1)
            # sharp + smoothed (or twice the one view), mean over views
            per_member.append(squared.view(branches, -1, faces).sum(0).mean(0) * (2 / branches))
        return combine_members(torch.stack(per_member), self.member_focus)

    def _jitter_landmarks(self, landmarks: Tensor, generator: torch.Generator) -> Tensor:
        """A random similarity transform of each face's landmarks about their centre: shift by up
        to `shift_px`, zoom by up to +-`align_zoom` (relative), rotate by up to
        +-`align_rotation_deg`. The recognizers then see the face cropped a little differently."""
        count = landmarks.shape[0]

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(count, *shape, generator=generator) * 2 - 1).to(landmarks)

        centre = landmarks.mean(1, keepdim=True)
        scale = 1 + self.align_zoom * uniform(1, 1)
        angle = torch.deg2rad(self.align_rotation_deg * uniform(1, 1))
        cos, sin = torch.cos(angle), torch.sin(angle)
        offset = landmarks - centre
        rotated = torch.stack([cos[..., 0] * offset[..., 0] - sin[..., 0] * offset[..., 1],
                               sin[..., 0] * offset[..., 0] + cos[..., 0] * offset[..., 1]], dim=-1)
        return centre + scale * rotated + self.shift_px * uniform(1, 2)

    def __call__(self, crops: Tensor, landmarks: Tensor, mask: Tensor | None = None,
                 progress: ProgressCallback | None = None, face_widths: Tensor | None = None,
                 budget_scale: Tensor | None = None) -> Tensor:
        """The change to add to each crop: `run(...).change`."""
        return self.run(crops, landmarks, mask, progress, face_widths, budget_scale).change

    def run(self, crops: Tensor, landmarks: Tensor, mask: Tensor | None = None,
            progress: ProgressCallback | None = None, face_widths: Tensor | None = None,
            budget_scale: Tensor | None = None) -> "AttackResult":
        """The change to add to each crop, and its parts.

        crops: (N, 3, S, S) RGB in [0, 1]; landmarks: (N, 5, 2) in crop pixels; mask: (N, 1, S, S)
        in [0, 1], how much of the change reaches each pixel (feathering); None = everywhere;
        face_widths: (N,) each face's width in crop pixels (needed by `warp_face_share`).
        budget_scale: (N, 1, S, S) >= 0, a budget map multiplying each pixel's limits (attack/jnd.py);
        None = the uniform budget.
        The additive part stays within the budget (|change| <= epsilon, and within the ΔE2000
        cap when there is one) measured against the warped clean crop when there is a warp.
        """
        generator = torch.Generator().manual_seed(self.seed)
        crops = crops.detach()
        mask = torch.ones_like(crops[:, :1]) if mask is None else mask.detach()
        budget, warp = self.budget, self.warp
        with torch.no_grad(), record_function("lowkey:clean embeddings"):
            clean = [r.embed(crops, landmarks) for r in self.recognizers]
            scale = None if budget_scale is None else budget_scale.detach().to(crops)
            limits = budget.limits(crops, scale)
            reach = warp.reach(landmarks, mask, face_widths) if warp.enabled else None
        shape = (crops.shape[0], budget.channels, *crops.shape[-2:])
        start = (torch.rand(shape, generator=generator) * 2 - 1) * self.random_start
        change = budget.project(start.to(crops.device, crops.dtype), crops, mask, limits, scale)
        field = warp.zeros(crops)
        velocity, field_velocity = torch.zeros_like(change), torch.zeros_like(field)
        for step in range(self.steps):
            change.requires_grad_(True)
            field.requires_grad_(warp.enabled)
            base = warp.apply(crops, field, reach) if warp.enabled else crops
            reference = base.detach()              # what the additive part is measured against
            protected, applied = self._protected(base, change, mask)
            members = self._members(generator)
            with record_function("lowkey:upload pipeline and alignment draws"):
                views = torch.cat([self._view(protected, generator) for _ in range(self.views)])
                jittered = torch.cat([self._jitter_landmarks(landmarks, generator) for _ in range(self.views)])
            distance = self._embedding_distance(views, jittered, clean, members, generator)
            with record_function("lowkey:penalties"):
                penalty = self.penalty_weight * (1 - ssim(reference + applied, reference, weight=mask))
                if self.shading_weight:
                    penalty = penalty + self.shading_weight * shading_energy(applied, mask, self.shading_sigma)
            objective = (distance - penalty).sum()
            with record_function("lowkey:backward"):
                gradients = torch.autograd.grad(objective, [change, field] if warp.enabled else [change])
            with torch.no_grad(), record_function("lowkey:step and projection"):
                share = self.step_size_at(step) / self.step_size
                velocity = self._momentum(velocity, gradients[0])
                if warp.enabled:
                    limits = budget.limits(reference, scale)
                change = budget.project(change + share * self.step_size * velocity.sign(), reference, mask, limits,
                                        scale)
                if warp.enabled:
                    field_velocity = self._momentum(field_velocity, gradients[1])
                    field = warp.project(field + share * WARP_STEP_SHARE * warp.step_unit * field_velocity.sign())
            if progress:
                progress("attack", step + 1, self.steps)
        with torch.no_grad():
            if not warp.enabled:
                protected, applied = self._protected(crops, change.detach(), mask)
                return AttackResult(applied.contiguous(), applied.contiguous())
            # the last step moved the warp: the additive part projected once more, onto its final base
            displacement = warp.displacement(field.detach(), reach)
            base = warp.apply(crops, field.detach(), reach)
            change = budget.project(change.detach(), base, mask, budget.limits(base, scale), scale)
            protected, applied = self._protected(base, change, mask)
            return AttackResult((protected - crops).contiguous(), applied.contiguous(), displacement, face_widths)

    def _protected(self, base: Tensor, change: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The protected crops in [0, 1]: `base` (the clean crops, warped when there is a warp)
        plus the additive change; and the additive part alone, faded by `mask`."""
        applied = mask * self.budget.to_rgb(change)
        if not self.warp.enabled:
            return base + applied, applied
        return (base + applied).clamp(0, 1), applied

    def _momentum(self, velocity: Tensor, gradient: Tensor) -> Tensor:
        """MI-FGSM: accumulate the gradient normalised per face (mean |g| = 1)."""
        scale = gradient.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (gradient.dim() - 1)))
        return self.momentum * velocity + gradient / scale


@dataclass(frozen=True)
class AttackResult:
    """What the attack did to each crop: `change` (N, 3, S, S), the whole difference to add to the
    clean crop (its warp and its additive part); `additive` (N, 3, S, S), the additive part alone,
    added after the warp (equal to `change` without one); `displacement` (N, 2, S, S), the warp's
    per-pixel displacement in crop pixels, None without a warp; `face_widths` (N,), crop pixels,
    as given to the attack."""

    change: Tensor
    additive: Tensor
    displacement: Tensor | None = None
    face_widths: Tensor | None = None

    @property
    def warp_change(self) -> Tensor:
        """What the warp alone does to the clean crop: warped clean crop = crop + this."""
        return self.change - self.additive

    def largest_displacement_share(self) -> Tensor | None:
        """Per face (N,): the warp's longest displacement as a share of the face's width; None
        without a warp or without face widths."""
        if self.displacement is None or self.face_widths is None:
            return None
        return largest_displacement_share(self.displacement, self.face_widths)
