"""LowKey's engine: one photo in, the same photo out with every face protected against face
recognition. A library: no sockets, no global state beyond model caches.

Five jobs, one subpackage each; each may import only the ones listed before it
(`tests/test_architecture.py` holds the code to this):

| subpackage / module | its job |
|---|---|
| `runtime.py`  | how the process uses the CPU: the thread policy the command line and the daemon apply before torch starts |
| `images/`     | bytes <-> pixels: decode (limits, orientation, colour profiles), encode in the input's format without private metadata, container parsing, the typed image errors |
| `faces/`      | finding and recognizing faces: MTCNN detection, 5-point alignment, the recognizer zoo, the graph runtime that runs converted model files, where those files live |
| `settings.py` | every protection knob in one frozen dataclass, and the presets (imports only constants from `images/` and `faces/`) |
| `attack/`     | the LowKey attack and what it needs: the per-pixel budget, perceptual penalties and colour difference, differentiable upload transforms, the working crops around faces |
| `protect.py`  | `protect()`: decode -> detect -> crops -> attack -> paste -> encode; in two halves (`prepare`, `protect_prepared`) so that several photos share one attack batch |
| `batching.py` | how many faces an attack batch holds (`measure_face_budget`), and a stream of photos cut into such batches (`protect_many`) |
| `evaluation/` | does it work? `lowkey eval`'s protocol, recognition metrics, upload transforms, the real dlib black box, reports, side-by-side pictures |
| `cli.py`      | the `lowkey` command |

Public entry points:

    from lowkey_engine.protect import protect
    from lowkey_engine import ProtectSettings, load_recognizer
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProtectSettings", "load_recognizer"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import lowkey_engine.images.decode` does not load the recognizers.
    if name == "ProtectSettings":
        from .settings import ProtectSettings
        return ProtectSettings
    if name == "load_recognizer":
        from .faces.recognizers import load_recognizer
        return load_recognizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
