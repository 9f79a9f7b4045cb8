"""Finding and recognizing faces. `detect` (MTCNN: boxes and 5 landmarks), `align` (differentiable
similarity alignment onto a recognizer's template), `recognizers` (the zoo: one interface, aligned
RGB in [0, 1] NCHW -> unit embeddings), `graphnet` and `nets` (the runtime that builds a network
from a converted checkpoint), `paths` (where converted model files live).

Imports nothing from the engine outside this package.
"""
