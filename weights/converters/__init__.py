"""Converters from foreign model formats to plain PyTorch checkpoints.

Each module here exposes `convert(files: dict[str, Path], output: Path) -> None`: `files` maps the
manifest's file names to verified local copies; the converter writes `output` (a `torch.save`d
checkpoint, or a folder for the `copy` converter). Converters run at fetch time only; the engine
loads their output without them.
"""
