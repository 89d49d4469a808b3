"""The ``sparse`` storage codec: pruned zeros really shrink the stored file.

Encoding (ONNX artifacts): every initializer with at least ``MIN_ZERO_SHARE`` zeros and
``MIN_ELEMENTS`` elements is stored as a bitmask (1 bit per element, 1 = nonzero, row-major) plus its
nonzero values in their own dtype; its data is cleared from the ONNX graph, which stays as the
skeleton. Skeleton, masks, values and an index (JSON) go into one safetensors container, compressed
with zstd (zlib when zstandard is not installed): ``model.sparse``. Lossless: decoding restores every
value bit for bit.

Decoding writes the dense ``model.onnx`` once into a cache folder under the system temporary folder,
keyed by the encoded file's hash, and returns its path; runtimes open that.

The manifest also carries the structured-pruning records (``"pruning"``: layer, axis, kept indices)
that ``modelpress.compress.prune.rebuild`` replays; an artifact with no sparse tensor keeps its plain
file and only gains those records.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import ModelFileError
from . import INDEX, SKELETON, cached_decoding, container, replace_dense, rewrite_manifest

ENCODING = "sparse"
FILE = "model.sparse"
MIN_ZERO_SHARE = 0.25
MIN_ELEMENTS = 64


def _compress(data: bytes) -> tuple[bytes, str]:
    try:
        import zstandard
    except ImportError:
        import zlib

        return zlib.compress(data, 9), "zlib"
    return zstandard.ZstdCompressor(level=19 if len(data) < (64 << 20) else 9).compress(data), "zstd"


def _decompress(data: bytes, method: str) -> bytes:
    if method == "zlib":
        import zlib

        return zlib.decompress(data)
    if method != "zstd":
        raise ModelFileError(f"Unknown compression '{method}' in a sparse artifact; re-export it.")
    try:
        import zstandard
    except ImportError:
        raise ModelFileError("This artifact is compressed with zstd; install it with 'pip install zstandard'.") from None
    return zstandard.ZstdDecompressor().decompress(data)


def encode(artifact: Artifact, model: Any, options: dict[str, Any]) -> Artifact:
    """Store ``artifact``'s ONNX initializers as bitmask + values, compressed; add pruning records."""
    import onnx
    from onnx import numpy_helper

    pruning = list(options.get("pruning", []))
    extra = {"pruning": pruning} if pruning else {}
    if artifact.format != "onnx":
        return rewrite_manifest(artifact, artifact.manifest["file"], **extra)
    proto = onnx.load(str(artifact.path))
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, Any]] = {}
    for i, init in enumerate(proto.graph.initializer):
        value = numpy_helper.to_array(init)
        if value.dtype.kind not in "fiu" or value.size < MIN_ELEMENTS or (value == 0).mean() < MIN_ZERO_SHARE:
            continue
        mask = value.reshape(-1) != 0
        arrays[f"{i}.mask"] = np.packbits(mask)
        arrays[f"{i}.values"] = np.ascontiguousarray(value.reshape(-1)[mask])
        index[str(i)] = {"name": init.name, "shape": list(value.shape), "dtype": value.dtype.str}
        init.CopyFrom(onnx.helper.make_tensor(init.name, init.data_type, [0], []))  # data moves out
    if not index:
        return rewrite_manifest(artifact, artifact.manifest["file"], **extra)
    payload, method = _compress(container(proto, index, arrays))
    return replace_dense(artifact, FILE, payload, encoding=ENCODING, **extra,
                         sparse={"compression": method, "tensors": len(index), "dense_file": artifact.path.name})


def decode(artifact: Artifact) -> Path:
    """A dense, runnable ``model.onnx`` (cached under the temporary folder, keyed by content hash)."""
    info = artifact.manifest.get("sparse")
    if artifact.manifest.get("encoding") != ENCODING or not info:
        return artifact.path
    return cached_decoding(artifact, "sparse", info.get("dense_file", "model.onnx"), lambda: _dense(artifact, info))


def _dense(artifact: Artifact, info: dict[str, Any]) -> bytes:
    import onnx
    import safetensors.numpy
    from onnx import numpy_helper

    try:
        arrays = safetensors.numpy.load(_decompress(artifact.path.read_bytes(), info["compression"]))
        proto = onnx.load_from_string(arrays[SKELETON].tobytes())
        index = json.loads(arrays[INDEX].tobytes())
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"{artifact.path} is not a valid sparse artifact ({type(e).__name__}); re-export it.") from None
    for i, meta in index.items():
        shape, dtype = meta["shape"], np.dtype(meta["dtype"])
        size = int(np.prod(shape))
        mask = np.unpackbits(arrays[f"{i}.mask"], count=size).astype(bool)
        dense = np.zeros(size, dtype=dtype)
        dense[mask] = arrays[f"{i}.values"]
        proto.graph.initializer[int(i)].CopyFrom(numpy_helper.from_array(dense.reshape(shape), meta["name"]))
    return proto.SerializeToString()
