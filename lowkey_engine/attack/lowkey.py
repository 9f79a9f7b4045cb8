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
- `identity_centre`: an identity-level objective. When several photos of one person are attacked
  together (an album), each of their faces is pushed away from the centre of that person's clean
  embeddings (per member), where the person's other photos (the probes a face search would
  match) lie, rather than from its own photo's embedding only. Then, and only then, a photo's
  protection depends on the other photos of its batch.

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


def combine_members(distances: Tensor, focus: float | None, chosen: Tensor | None = None) -> Tensor:
    """The ensemble's distance per face from its members' (M, N): their mean (`focus` None), or a
    soft minimum at temperature `focus` (squared-distance units), between the mean (large focus)
    and the smallest (small focus), so the members that still recognize the face weigh most.
    `chosen` (M, N) bool: which members count for each face (None: all); the others' entries are
    ignored (each face of a batch may attack its own subset of the members)."""
    if chosen is None:
        if focus is None:
            return distances.mean(0)
        return -focus * (torch.logsumexp(-distances / focus, 0) - math.log(distances.shape[0]))
    count = chosen.sum(0).clamp_min(1)
    if focus is None:
        return torch.where(chosen, distances, torch.zeros_like(distances)).sum(0) / count
    masked = torch.where(chosen, -distances / focus, torch.full_like(distances, -math.inf))
    return -focus * (torch.logsumexp(masked, 0) - count.log())


@dataclass
class PhotoFaces:
    """One photo's faces, as the attack takes them (`LowKeyAttack.run_photos`).

    crops: (n, 3, S, S) RGB in [0, 1]; landmarks: (n, 5, 2) in crop pixels; mask: (n, 1, S, S) in
    [0, 1], how much of the change reaches each pixel (None = everywhere); face_widths: (n,) crop
    pixels (needed by `warp_face_share`); budget_scale: (n, 1, S, S) >= 0, the budget map (None =
    uniform); progress: this photo's progress(stage, done, total), called after every step. An
    exception raised by it takes this photo out of the batch at that step (the others go on) and
    becomes this photo's outcome."""

    crops: Tensor
    landmarks: Tensor
    mask: Tensor | None = None
    face_widths: Tensor | None = None
    budget_scale: Tensor | None = None
    progress: ProgressCallback | None = None

    @property
    def count(self) -> int:
        return self.crops.shape[0]


@dataclass
class LowKeyAttack:
    """Signed-gradient LowKey attack. Knobs mean what `ProtectSettings`' fields of the same
    names mean (settings.py); their defaults are the `standard` preset's, but for the guided warp
    (`warp_face_share`, off here): it needs each face's width, which the engine knows and passes
    with the preset's share (from_settings). `shading_sigma` (crop pixels) is the shading
    penalty's blur: SHADING_SIGMA_PER_FACE of the working face's width."""

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
    warp_face_share: float = 0.0
    warp_grid: int = _DEFAULTS.warp_grid
    diversity: str = _DEFAULTS.diversity
    diversity_probability: float = _DEFAULTS.diversity_probability
    identity_centre: bool = _DEFAULTS.identity_centre
    identity_link_cosine: float = _DEFAULTS.identity_link_cosine
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

    def _embedding_distance(self, views: Tensor, landmarks: Tensor, clean: list[Tensor], batch: "_PhotoBatch",
                            members: list[list[int]]) -> Tensor:
        """Per face (N,): the mean over its photo's `members` (or their soft minimum, `member_focus`)
        of the mean over the views of the squared distance to the clean embedding, for the view plus
        for its Gaussian-smoothed copy (`smooth_every_view`; else once per view, doubled to the same
        scale, the views already smoothed at random). views (V*N, 3, S, S) and landmarks
        (V*N, 5, 2) hold V views of the N faces, view-major; members[p] lists photo p's members."""
        faces = clean[0].shape[0]
        branches = 2 if self.smooth_every_view else 1
        if self.smooth_every_view:
            with record_function("lowkey:smoothed branch"):
                views = torch.cat([views, gaussian_blur(views, self.blur_kernel, self.blur_sigma)])
                landmarks = torch.cat([landmarks, landmarks])
        copies = views.shape[0] // faces                  # branches x views, each a run of N faces
        everyone = all(len(m) == len(self.recognizers) for m in members)
        per_member, chosen = [], []
        for index in sorted({i for m in members for i in m}):
            photos = [p for p, m in enumerate(members) if index in m]
            rows = batch.rows(photos)                      # this member's faces, None = all
            seen, points = views, landmarks
            if rows is not None:
                every_copy = (rows[None] + faces * torch.arange(copies)[:, None]).flatten().to(views.device)
                seen, points = views.index_select(0, every_copy), landmarks.index_select(0, every_copy)
            augment = self._augment(batch, photos)
            with record_function("lowkey:surrogates"):
                recognizer = self.recognizers[index]
                embedded = (recognizer.embed(seen, points) if augment is None
                            else recognizer.embed(seen, points, augment=augment))
            target = clean[index] if rows is None else clean[index].index_select(0, rows.to(views.device))
            squared = (embedded.view(copies, -1, embedded.shape[-1]) - target).pow(2).sum(-1)
            # sharp + smoothed (or twice the one view), mean over views
            distance = squared.view(branches, -1, target.shape[0]).sum(0).mean(0) * (2 / branches)
            if rows is not None:
                distance = distance.new_zeros(faces).index_put((rows.to(views.device),), distance)
            per_member.append(distance)
            chosen.append(batch.face_mask(photos, views.device))
        return combine_members(torch.stack(per_member), self.member_focus, None if everyone else torch.stack(chosen))

    def _augment(self, batch: "_PhotoBatch", photos: list[int]) -> Callable[[Tensor], Tensor] | None:
        """The input-diversity transform of the aligned faces of `photos` (copies x their faces,
        copy-major), each photo's part drawn from that photo's generator; None when off."""
        if not self.input_diversity.enabled:
            return None
        if len(batch.generators) == 1:
            return lambda aligned: self.input_diversity(aligned, batch.generators[0])
        counts = [batch.counts[p] for p in photos]

        def augment(aligned: Tensor) -> Tensor:
            copies = aligned.shape[0] // sum(counts)
            grid = aligned.view(copies, sum(counts), *aligned.shape[1:])
            parts, start = [], 0
            for photo, count in zip(photos, counts):
                part = grid[:, start:start + count].reshape(-1, *aligned.shape[1:])
                parts.append(self.input_diversity(part, batch.generators[photo]).view(copies, count,
                                                                                       *aligned.shape[1:]))
                start += count
            return torch.cat(parts, 1).view_as(aligned)

        return augment

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

    def _draws(self, protected: Tensor, landmarks: Tensor, batch: "_PhotoBatch") -> tuple[Tensor, Tensor]:
        """This step's `views` views of every face and their jittered landmarks, view-major
        (V*N, ...): each photo's upload-pipeline and alignment draws from its own generator, in
        the same order as when the photo is attacked alone."""
        views = [torch.cat([self._view(protected[part], generator) for part, generator in batch.parts()])
                 for _ in range(self.views)]
        jittered = [torch.cat([self._jitter_landmarks(landmarks[part], generator) for part, generator in batch.parts()])
                    for _ in range(self.views)]
        return torch.cat(views), torch.cat(jittered)

    def __call__(self, crops: Tensor, landmarks: Tensor, mask: Tensor | None = None,
                 progress: ProgressCallback | None = None, face_widths: Tensor | None = None,
                 budget_scale: Tensor | None = None) -> Tensor:
        """The change to add to each crop: `run(...).change`."""
        return self.run(crops, landmarks, mask, progress, face_widths, budget_scale).change

    def run(self, crops: Tensor, landmarks: Tensor, mask: Tensor | None = None,
            progress: ProgressCallback | None = None, face_widths: Tensor | None = None,
            budget_scale: Tensor | None = None) -> "AttackResult":
        """The change to add to each crop of one photo, and its parts.

        crops: (N, 3, S, S) RGB in [0, 1]; landmarks: (N, 5, 2) in crop pixels; mask: (N, 1, S, S)
        in [0, 1], how much of the change reaches each pixel (feathering); None = everywhere;
        face_widths: (N,) each face's width in crop pixels (needed by `warp_face_share`).
        budget_scale: (N, 1, S, S) >= 0, a budget map multiplying each pixel's limits (attack/jnd.py);
        None = the uniform budget.
        The additive part stays within the budget (|change| <= epsilon, and within the ΔE2000
        cap when there is one) measured against the warped clean crop when there is a warp.
        An exception raised by `progress` stops the attack and is raised from here.
        """
        (outcome,) = self.run_photos([PhotoFaces(crops, landmarks, mask, face_widths, budget_scale, progress)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_photos(self, photos: Sequence[PhotoFaces]) -> list["AttackResult | BaseException"]:
        """Attack the faces of several photos in one batch; per photo, its `AttackResult`, or the
        exception its progress callback raised to stop it.

        Every photo draws its randomness (start, upload pipeline, alignment, members, diversity)
        from its own generator seeded with `seed`, and every term of the objective is per face, so
        a photo's protection does not depend on the other photos in its batch: batched, it is what
        it is alone, up to the last bits of floating point that batch sizes change in the
        convolutions (which the signed steps may amplify into a level here and there). The one
        exception is deliberate: with `identity_centre`, photos of the same person in the batch
        share that person's centre as their target.
        All photos share the crop size S; a photo without a `budget_scale` beside photos with one
        gets the uniform map (ones), which changes nothing of its protection.
        """
        if not photos:
            return []
        device = photos[0].crops.device
        batch = _PhotoBatch(self.seed, [p.count for p in photos], [p.progress for p in photos])
        crops = torch.cat([p.crops for p in photos]).detach()
        landmarks = torch.cat([p.landmarks for p in photos])
        mask = torch.cat([torch.ones_like(p.crops[:, :1]) if p.mask is None else p.mask for p in photos]).detach()
        widths = None if any(p.face_widths is None for p in photos) else torch.cat([p.face_widths for p in photos])
        budget, warp = self.budget, self.warp
        with torch.no_grad(), record_function("lowkey:clean embeddings"):
            clean = [r.embed(crops, landmarks) for r in self.recognizers]
            if self.identity_centre:
                clean = self._identity_centres(clean, batch)
            scale = None if all(p.budget_scale is None for p in photos) else torch.cat(
                [torch.ones_like(p.crops[:, :1]) if p.budget_scale is None else p.budget_scale
                 for p in photos]).detach().to(crops)
            limits = budget.limits(crops, scale)
            reach = warp.reach(landmarks, mask, widths) if warp.enabled else None
        start = torch.cat([torch.rand((count, budget.channels, *crops.shape[-2:]), generator=generator)
                           for (_, generator), count in zip(batch.parts(), batch.counts)])
        start = (start * 2 - 1) * self.random_start
        change = budget.project(start.to(device, crops.dtype), crops, mask, limits, scale)
        field = warp.zeros(crops)
        velocity, field_velocity = torch.zeros_like(change), torch.zeros_like(field)
        # Per-face state, cut down when a photo leaves the batch (its progress callback raised)
        state = {"crops": crops, "landmarks": landmarks, "mask": mask, "widths": widths, "scale": scale,
                 "limits": limits, "reach": reach, "clean": clean, "change": change, "field": field,
                 "velocity": velocity, "field_velocity": field_velocity}
        for step in range(self.steps):
            crops, landmarks, mask, scale, reach, clean, limits = (
                state[k] for k in ("crops", "landmarks", "mask", "scale", "reach", "clean", "limits"))
            change = state["change"].requires_grad_(True)
            field = state["field"].requires_grad_(warp.enabled)
            base = warp.apply(crops, field, reach) if warp.enabled else crops
            reference = base.detach()              # what the additive part is measured against
            protected, applied = self._protected(base, change, mask)
            members = [self._members(generator) for _, generator in batch.parts()]
            with record_function("lowkey:upload pipeline and alignment draws"):
                views, jittered = self._draws(protected, landmarks, batch)
            distance = self._embedding_distance(views, jittered, clean, batch, members)
            with record_function("lowkey:penalties"):
                penalty = self.penalty_weight * (1 - ssim(reference + applied, reference, weight=mask))
                if self.shading_weight:
                    penalty = penalty + self.shading_weight * shading_energy(applied, mask, self.shading_sigma)
            objective = (distance - penalty).sum()
            with record_function("lowkey:backward"):
                gradients = torch.autograd.grad(objective, [change, field] if warp.enabled else [change])
            with torch.no_grad(), record_function("lowkey:step and projection"):
                share = self.step_size_at(step) / self.step_size
                velocity = self._momentum(state["velocity"], gradients[0])
                if warp.enabled:
                    limits = state["limits"] = budget.limits(reference, scale)
                state["change"] = budget.project(change.detach() + share * self.step_size * velocity.sign(),
                                                 reference, mask, limits, scale)
                state["velocity"] = velocity
                if warp.enabled:
                    state["field_velocity"] = self._momentum(state["field_velocity"], gradients[1])
                    state["field"] = warp.project(field.detach() + share * WARP_STEP_SHARE * warp.step_unit
                                                  * state["field_velocity"].sign())
            leaving = batch.report("attack", step + 1, self.steps)
            if leaving:
                state = batch.drop(leaving, state)
                if not batch.counts:
                    break
        if batch.counts:
            with torch.no_grad():
                outcome = self._finish(state, widths=state["widths"])
            for (part, _), photo in zip(batch.parts(), batch.photos):
                batch.outcomes[photo] = outcome.part(part)
        return batch.outcomes

    def _identity_centres(self, clean: list[Tensor], batch: "_PhotoBatch") -> list[Tensor]:
        """Per member, each face's target: the unit mean of the clean embeddings (N, D) of its
        person's faces in the batch. Two faces of different photos are one person when their clean
        embeddings' cosine, averaged over the members, is at least `identity_link_cosine`; people
        are the connected groups of such links (a face without one keeps its own embedding)."""
        photo = torch.repeat_interleave(torch.arange(len(batch.counts)), torch.tensor(batch.counts))
        similarity = torch.stack([(e @ e.T).cpu() for e in clean]).mean(0)
        linked = (similarity >= self.identity_link_cosine) & (photo[:, None] != photo[None, :])
        person = list(range(len(photo)))             # union-find over the links

        def root(face: int) -> int:
            while person[face] != face:
                person[face] = person[person[face]]
                face = person[face]
            return face

        for a, b in linked.nonzero().tolist():
            person[root(a)] = root(b)
        groups = torch.tensor([root(face) for face in range(len(photo))])
        same = (groups[:, None] == groups[None, :]).to(clean[0])          # (N, N): rows average their person
        shared = (same.sum(1) > 1)[:, None]
        return [torch.where(shared, torch.nn.functional.normalize(same @ e, dim=1), e) for e in clean]

    def _finish(self, state: dict, widths: Tensor | None) -> "AttackResult":
        """The attack's result for the faces still in the batch, from its final state."""
        crops, mask, scale, reach = state["crops"], state["mask"], state["scale"], state["reach"]
        change = state["change"].detach()
        if not self.warp.enabled:
            protected, applied = self._protected(crops, change, mask)
            return AttackResult(applied.contiguous(), applied.contiguous())
        # the last step moved the warp: the additive part projected once more, onto its final base
        field = state["field"].detach()
        displacement = self.warp.displacement(field, reach)
        base = self.warp.apply(crops, field, reach)
        change = self.budget.project(change, base, mask, self.budget.limits(base, scale), scale)
        protected, applied = self._protected(base, change, mask)
        return AttackResult((protected - crops).contiguous(), applied.contiguous(), displacement, widths)

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


class _PhotoBatch:
    """The photos of one attack batch: which are still in it (in order), their faces' rows, their
    generators and progress callbacks, and the outcomes of those that have left or finished.
    Positions (`p`) count the photos still in the batch; `photos[p]` is the photo's index as given."""

    def __init__(self, seed: int, counts: Sequence[int], progress: Sequence[ProgressCallback | None]):
        self.photos = list(range(len(counts)))
        self.counts = list(counts)
        self.generators = [torch.Generator().manual_seed(seed) for _ in counts]
        self.progress = list(progress)
        self.outcomes: list[AttackResult | BaseException | None] = [None] * len(counts)

    def parts(self) -> list[tuple[slice, torch.Generator]]:
        """Each remaining photo's rows of the batch, and its generator."""
        ends = torch.tensor(self.counts).cumsum(0).tolist()
        return [(slice(end - count, end), generator)
                for end, count, generator in zip(ends, self.counts, self.generators)]

    def rows(self, positions: list[int]) -> Tensor | None:
        """The batch rows (K,) of the faces of the photos at `positions`; None when that is all."""
        if len(positions) == len(self.counts):
            return None
        parts = self.parts()
        return torch.cat([torch.arange(parts[p][0].start, parts[p][0].stop) for p in positions])

    def face_mask(self, positions: list[int], device) -> Tensor:
        """(N,) bool: True on the faces of the photos at `positions`."""
        chosen = torch.zeros(sum(self.counts), dtype=torch.bool)
        for p in positions:
            chosen[self.parts()[p][0]] = True
        return chosen.to(device)

    def report(self, stage: str, done: int, total: int) -> list[int]:
        """Tell every remaining photo its progress; the positions of those whose callback raised
        (the exception kept as that photo's outcome)."""
        leaving = []
        for position, (photo, callback) in enumerate(zip(self.photos, self.progress)):
            if callback is None:
                continue
            try:
                callback(stage, done, total)
            except Exception as stop:  # noqa: BLE001 - whatever its own callback raised stops this photo only
                self.outcomes[photo] = stop
                leaving.append(position)
        return leaving

    def drop(self, positions: list[int], state: dict) -> dict:
        """Take the photos at `positions` out of the batch; `state` (per-face tensors, tuples and
        lists of them, or None) cut down to the remaining faces' rows."""
        parts = self.parts()
        keep = [p for p in range(len(self.counts)) if p not in positions]
        rows = torch.cat([torch.arange(parts[p][0].start, parts[p][0].stop) for p in keep]) if keep else None
        for name in ("photos", "counts", "generators", "progress"):
            setattr(self, name, [getattr(self, name)[p] for p in keep])
        return {key: _take_rows(value, rows) for key, value in state.items()}


def _take_rows(value, rows: Tensor | None):
    """`value` (a per-face tensor, a tuple or list of them, or None) at `rows` (None: nothing left)."""
    if value is None or rows is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_take_rows(v, rows) for v in value)
    return value.index_select(0, rows.to(value.device))


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

    def part(self, rows: slice) -> "AttackResult":
        """The result for the crops at `rows` (one photo's faces of a batch)."""
        return AttackResult(self.change[rows], self.additive[rows],
                            None if self.displacement is None else self.displacement[rows],
                            None if self.face_widths is None else self.face_widths[rows])
