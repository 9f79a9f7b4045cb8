"""Model files: the manifest of every file LowKey can use, and the fetch/convert step.

Imported as `lowkey_weights` (the folder keeps DESIGN.md's name `weights/`). The engine never imports
this package: it reads the converted checkpoints through `lowkey_engine.faces.paths`.
"""
