"""The LowKey attack (`lowkey.LowKeyAttack`) and what it is made of: the per-pixel budget
(`budget`), perceptual penalties and measures (`perceptual`, `colour`), differentiable upload
transforms (`transforms`), and the working crops where each face's change lives (`crops`).

May import `faces/` (the recognizers it attacks) and `settings` (its knobs' defaults).
"""

from .lowkey import LowKeyAttack, ProgressCallback

__all__ = ["LowKeyAttack", "ProgressCallback"]
