"""Decodes TF.js weight files: a weights manifest plus the concatenated binary shards.

A manifest is a list of groups `{"paths": [...], "weights": [{"name", "shape", "dtype",
"quantization"?}]}`. Tensors are stored back to back, little-endian, in manifest order, across the
group's shards. Quantised tensors store `quantization.dtype` values: uint8/uint16 decode as
`q * scale + min`, float16 as plain half floats. Shapes are TF's: NHWC activations, HWIO conv kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_STORED_DTYPES = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("u1"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}


def read_weights(manifest: list[dict], shards: list[Path]) -> dict[str, np.ndarray]:
    """Every tensor of a TF.js weights manifest, by name, as float32 (int32 stays int32).

    manifest: the manifest's list of groups (`weightsManifest` of a model.json, or a
              `*-weights_manifest.json` file). shards: the binary files of all groups, in order.
    """
    blob = b"".join(Path(p).read_bytes() for p in shards)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for spec in group["weights"]:
            quant = spec.get("quantization")
            stored = _STORED_DTYPES[quant["dtype"] if quant else spec["dtype"]]
            count = int(np.prod(spec["shape"], dtype=np.int64))
            raw = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            offset += count * stored.itemsize
            if quant and quant["dtype"] in ("uint8", "uint16"):
                values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            elif spec["dtype"] == "int32":
                values = raw.astype(np.int32)
            else:
                values = raw.astype(np.float32)
            tensors[spec["name"]] = values.reshape(spec["shape"])
    if offset != len(blob):
        raise ValueError(f"TF.js weights: manifest covers {offset} bytes, shards hold {len(blob)}")
    return tensors
