"""Protection settings: one typed, frozen place for every knob, and the named presets.

    settings = ProtectSettings.from_preset("standard", seed=7)   # a preset plus overrides

Pixel quantities are in [0, 1] units (1/255 = one 8-bit level).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .images.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from .faces.recognizers import DEFAULT_ENSEMBLE


@dataclass(frozen=True)
class ProtectSettings:
    preset: str = "standard"
    # --- the attack (LowKey: signed-gradient ascent on embedding distance minus a penalty)
    # Defaults are the `standard` preset, tuned on measured curves (README, "Does it work?").
    steps: int = 30
    step_size: float = 0.008                  # the first step, [0, 1] pixel units
    step_decay: float = 0.1                   # the last step's share of step_size; the steps shrink
                                              # along a half cosine in between (1 = constant steps)
    epsilon: float | None = 12 / 255          # L-infinity budget on the change; None = unbounded
    colour: str = "luma"                      # "luma": lightness only, chroma kept; "rgb": channels move freely
    texture_floor: float = 1.0                # budget in flat areas, share of epsilon; 1 = uniform budget
    texture_reference: float = 0.04           # local luma std at which a pixel gets the full epsilon
    delta_e_cap: float | None = 2.6           # per-pixel CIEDE2000 limit; None = epsilon alone
    momentum: float = 0.9                     # MI-FGSM decay of the accumulated gradient; 0 = none
    random_start: float = 0.005               # uniform start in [-r, r]
    # The penalties weigh against the distance averaged over the ensemble's members (see attack).
    penalty_weight: float = 55.0              # weight of (1 - SSIM) between clean and protected crop
    shading_weight: float = 0.75              # weight of the change's shading energy (8-bit levels^2; its
                                              # blur is perceptual.SHADING_SIGMA_PER_FACE of the working face)
    blur_kernel: int = 7                      # LowKey's smoothed branch: Gaussian kernel size and sigma,
    blur_sigma: float = 3.0                   # in pixels of a `working_face_px` face (scaled with it)
    smooth_every_view: bool = False           # True: each view also seen smoothed (LowKey's way); False:
                                              # each view smoothed at random, half the surrogate passes
    ensemble: tuple[str, ...] = DEFAULT_ENSEMBLE
    members_per_step: int | None = None       # members each step attacks, drawn at random; None = all
    warp_px: float = 0.0                      # a smooth warp of the face beside the additive change: its
    warp_grid: int = 8                        # largest displacement (pixels of a `working_face_px` face;
                                              # 0 = none) and control points per crop side (attack/warp.py)
    # --- geometry: a landmark-guided warp beside the additive change, with its own budget (attack/
    # warp.py GuidedWarp, face_parts.py): the nose, mouth and cheeks move, eyes, brows and the face's
    # outline hold still; the additive change's budget and penalties are measured after the warp.
    warp_face_share: float = 0.02             # longest displacement, share of the face's width (0.02 =
                                              # 2 %); 0 = none. Uses warp_grid; excludes warp_px
    member_focus: float | None = None         # None: the members' distances are averaged; a temperature
                                              # (squared-distance units, 0-8): their soft minimum, so the
                                              # members that still recognize the face weigh most
    identity_centre: bool = True              # True: push each face away from the centre of the faces of
    identity_link_cosine: float = 0.45        # its person among the photos attacked together (an album;
                                              # same person: mean clean cosine over the members at least
                                              # this, faces of other photos), not only from its own clean
                                              # embedding; alone, or with no such face, the same as False
    views: int = 1                            # upload-pipeline and alignment draws per step, one batch
    diversity: str = "none"                   # random transform of the aligned faces the surrogates see:
    diversity_probability: float = 0.5        # "none", "resize_pad", "block_shuffle", "structure"
                                              # (attack/diversity.py), each face with this chance a step
    # --- the budget map (a just-noticeable-difference budget; attack/jnd.py)
    budget_map: str = "uniform"               # "uniform": every pixel gets the budget above; "jnd": each
                                              # pixel's share from the photo's own texture and luminance and
                                              # the face mesh's regions (a face without a mesh fit: uniform);
                                              # "regions": the mesh's regions alone (the eyes, lip edges, the
                                              # zone between the brows and under the eyes get a small share)
    jnd_normalise: str = "p95"                # "p95": the map's 95th percentile over the face box is 1 (the
                                              # face ΔE2000 p95 stays comparable); "mean": its mean is 1
    budget_map_min_face_px: float = 0.0       # the map applies to faces at least this wide (photo pixels);
                                              # narrower faces, whose detail nobody sees, keep the uniform budget
    full_budget_face_px: float | None = None  # faces up to this wide (photo pixels) get the whole budget; a
    budget_size_exponent: float = 0.5         # wider one (full_budget_face_px / width) ** exponent of it
                                              # (attack/budget.py: large faces show the change's patches
                                              # larger); None = every face the whole budget
    # --- expectation over what social sites do to uploads (applied at random each step)
    robust: bool = True
    jpeg_quality: tuple[int, int] = (60, 90)
    downscale: tuple[float, float] = (0.5, 1.0)
    shift_px: float = 1.0                     # random shifts of the alignment, working pixels
    align_zoom: float = 0.1                   # random zoom of the alignment, +- relative
    align_rotation_deg: float = 6.0           # random rotation of the alignment, +- degrees
    # --- where the perturbation lives
    working_face_px: int = 128                # face box width in the working crop, pixels: at least this,
    working_face_max_px: int = 128            # and up to this for larger faces (their own resolution)
    crop_margin: float = 1.8                  # crop side = margin * face box side
    feather: float = 0.15                     # share of the crop side over which the change fades out
    min_face_px: int = 20                     # faces smaller than this (longer box side, photo pixels) are left alone
    # --- input limits (decompression bombs, oversized uploads)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    # --- output
    jpeg_output_quality: int | None = None    # None: the photo's own quality and chroma subsampling
                                              # (images.encode.output_jpeg_quality); else 1-100
    seed: int = 0
    device: str = "auto"                      # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"

    def working_face_for(self, face_px: float) -> int:
        """The working crop's face width (pixels) for a face `face_px` photo pixels wide: its own
        size within [working_face_px, working_face_max_px]."""
        return int(min(max(round(face_px), self.working_face_px), max(self.working_face_px, self.working_face_max_px)))

    @classmethod
    def from_preset(cls, preset: str = "standard", **overrides) -> "ProtectSettings":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[preset], **overrides)

    def replace(self, **overrides) -> "ProtectSettings":
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, ProtectSettings] = {
    # About as fast as the engine goes (15 steps); the same visibility limits as standard.
    "fast": ProtectSettings(preset="fast", steps=15, step_size=0.012),
    # The default: five surrogates (EdgeFace-xs the modern one), a lightness-only change with each
    # pixel within CIEDE2000 2.6 of the original, SSIM and smooth lighter/darker patches (shading)
    # penalised; the nose, mouth and cheeks moved by at most 2 % of the face's width; in an album,
    # each photo of a person pushed from that person's centre (docs/research.md, 2026-12-07: what
    # each bought).
    "standard": ProtectSettings(preset="standard"),
    # For people who prefer protection: a looser cap (3.0), lighter penalties, more steps and a
    # 3 % warp; the change shows on close inspection (README: its measured visibility).
    "strong": ProtectSettings(preset="strong", steps=40, delta_e_cap=3.0, penalty_weight=40.0,
                              shading_weight=0.375, warp_face_share=0.03),
}
