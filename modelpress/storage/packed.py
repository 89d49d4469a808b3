"""The ``packed`` storage codec: low-bit weights stored as packed integer codes plus scales.

Encoding (ONNX artifacts): every float32 weight of a Conv/Gemm/MatMul that lies exactly on a uniform grid
of 2 to 8 bits (per tensor, per output channel or per group of ``group_size`` inputs, as ``quantize`` with
``mode: weight_only`` left it) is stored as ``bits``-bit codes packed into bytes (little-endian bit order),
one float32 scale per tensor/channel/group and, when asymmetric, one uint8 zero point each. The fewest bits
that reproduce the tensor are chosen per tensor, so mixed precision needs no extra bookkeeping; a weight on
no grid stays float. Skeleton ONNX (packed data cleared), codes, scales and an index (JSON) go into one
safetensors container, ``model.packed``: int4 weights take about 1/8 of their float32 bytes.

Decoding writes a dense ``model.onnx`` once into a cache folder under the system temporary folder, keyed by
the encoded file's hash, and returns its path. Decoded weights equal the encoded ones up to the rounding of
the scale (at most one float32 ulp per value).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import ModelFileError
from . import INDEX, SKELETON, cached_decoding, container, replace_dense

ENCODING = "packed"
FILE = "model.packed"
MIN_ELEMENTS = 64
EXACT = 1e-3  # a weight is on a grid when every value is within EXACT * step of a grid point


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (< 2**bits) -> bytes holding ``bits`` bits per code, little-endian bit order.

    >>> unpack_bits(pack_bits(np.array([1, 2, 3, 0, 5], np.uint8), 3), 3, 5).tolist()
    [1, 2, 3, 0, 5]
    """
    codes = np.ascontiguousarray(codes, np.uint8).reshape(-1, 1)
    planes = np.unpackbits(codes, axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(packed, bitorder="little", count=count * bits).reshape(count, bits)
    return np.packbits(np.pad(planes, ((0, 0), (0, 8 - bits))), axis=1, bitorder="little").reshape(-1)


def _rows(w: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved = (shape[axis], *shape[:axis], *shape[axis + 1:])
    return np.moveaxis(rows.reshape(moved), 0, axis)


def _groups(k: int, granularity: str, group_size: int) -> int:
    return k if granularity == "channel" else min(group_size, k)


def dequantize(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Float32 weights from unsigned codes in the original layout (``meta``: shape, axis, granularity, ...)."""
    shape, axis = tuple(meta["shape"]), meta["axis"]
    signed = codes.astype(np.float32) - np.float32(meta["offset"])
    if meta["granularity"] == "tensor":
        return ((signed - zero_point.reshape(())) * scale.reshape(())).astype(np.float32).reshape(shape)
    rows = _rows(signed.reshape(shape), axis)
    c, k = rows.shape
    g = _groups(k, meta["granularity"], meta["group_size"])
    pad = (-k) % g
    grouped = np.pad(rows, ((0, 0), (0, pad))).reshape(c, -1, g)
    values = (grouped - zero_point.reshape(c, -1, 1)) * scale.reshape(c, -1, 1)
    return _unrows(values.reshape(c, -1)[:, :k].astype(np.float32), shape, axis)


def _on_grid(w: np.ndarray, axis: int, options: dict[str, Any]) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray] | None:
    """(meta, unsigned codes, scale, zero point) at the fewest bits that reproduce ``w``, else None."""
    import torch

    from ..compress.quantizer import WeightSpec, quantize

    granularity, symmetric = options.get("granularity", "channel"), bool(options.get("symmetric", True))
    group_size = int(options.get("group_size") or 128)
    for bits in range(2, 9):
        spec = WeightSpec(bits, symmetric, granularity, group_size)
        qw = quantize(torch.from_numpy(w.copy()), spec, axis)
        err = np.abs(qw.dequantize().numpy() - w)
        if np.all(err <= EXACT * qw.step().numpy()):
            offset = -spec.qmin
            meta = {"bits": bits, "shape": list(w.shape), "axis": axis, "granularity": granularity,
                    "group_size": group_size, "offset": offset, "symmetric": symmetric}
            codes = (qw.integers().numpy() + offset).astype(np.uint8)
            return meta, codes, qw.scale.reshape(-1).numpy().astype(np.float32), \
                qw.zero_point.reshape(-1).numpy().astype(np.uint8)
    return None


def encode(artifact: Artifact, model: Any, options: dict[str, Any]) -> Artifact:
    """Store the low-bit weights of ``artifact`` packed (options: granularity, group_size, symmetric)."""
    import onnx

    from ..onnxgraph import OnnxGraph

    if artifact.format != "onnx":
        return artifact
    proto = onnx.load(str(artifact.path))
    g = OnnxGraph(proto)
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, Any]] = {}
    positions = {init.name: i for i, init in enumerate(proto.graph.initializer)}
    for node in proto.graph.node:
        found = g.weight_input(node)
        if found is None or found[0] not in positions or found[0] in {m["name"] for m in index.values()}:
            continue
        name, w, axis = found
        if w.size < MIN_ELEMENTS:
            continue
        packed = _on_grid(w, axis, options)
        if packed is None:
            continue
        meta, codes, scale, zp = packed
        key = str(positions[name])
        arrays[f"{key}.codes"] = pack_bits(codes, meta["bits"])
        arrays[f"{key}.scale"] = scale
        if not meta["symmetric"]:
            arrays[f"{key}.zero_point"] = zp
        index[key] = {"name": name, **meta}
        init = proto.graph.initializer[positions[name]]
        init.CopyFrom(onnx.helper.make_tensor(init.name, init.data_type, [0], []))  # the data moves out
    if not index:
        return artifact
    bits = sorted({m["bits"] for m in index.values()})
    return replace_dense(artifact, FILE, container(proto, index, arrays), encoding=ENCODING,
                         packed={"tensors": len(index), "bits": bits, "dense_file": artifact.path.name})


def decode(artifact: Artifact) -> Path:
    """A dense, runnable ``model.onnx`` (cached under the temporary folder, keyed by content hash)."""
    info = artifact.manifest.get("packed")
    if artifact.manifest.get("encoding") != ENCODING or not info:
        return artifact.path
    return cached_decoding(artifact, "packed", info.get("dense_file", "model.onnx"), lambda: _dense(artifact))


def _dense(artifact: Artifact) -> bytes:
    import onnx
    import safetensors.numpy
    from onnx import numpy_helper

    try:
        arrays = safetensors.numpy.load(artifact.path.read_bytes())
        proto = onnx.load_from_string(arrays[SKELETON].tobytes())
        index = json.loads(arrays[INDEX].tobytes())
        for key, meta in index.items():
            count = int(np.prod(meta["shape"]))
            codes = unpack_bits(arrays[f"{key}.codes"], meta["bits"], count)
            scale = arrays[f"{key}.scale"]
            zp = arrays.get(f"{key}.zero_point", np.zeros(scale.shape, np.uint8)).astype(np.float32)
            dense = dequantize(codes, scale, zp, meta)
            proto.graph.initializer[int(key)].CopyFrom(numpy_helper.from_array(dense, meta["name"]))
    except Exception as e:
        raise ModelFileError(f"{artifact.path} is not a valid packed artifact ({type(e).__name__}: {e}); "
                             f"re-export it.") from None
    return proto.SerializeToString()
