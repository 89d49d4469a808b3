"""The ``codebook`` storage codec: clustered (and pruned) ONNX weights as codebooks, indices and sparse
positions, entropy coded; decoded back to a dense, runnable ONNX file for the runtimes.

An encoded artifact stores two files:

- ``graph.onnx``: the exported graph without its float32 initializers (doc strings dropped);
- ``weights.mpcb``: every float32 initializer, each as the smallest of raw float32 or a codebook plus
  indices (dense, or sparse with relative positions), the symbol streams coded by Huffman (default),
  zstd or fixed-width bit packing.

``weights.mpcb`` layout (integers little-endian)::

    b"MPCB" | version (1 byte) | SHA-256 of everything after it (32 bytes)
    | header length (4 bytes) | header: zlib-compressed JSON | payload segments, in header order

The header names each tensor with its shape, encoding and segment sizes, and holds the SHA-256 of
``graph.onnx``. Decoding checks both hashes and validates every field and stream, so a damaged file is
reported as such rather than producing a wrong model; a decoded tensor equals the exported one exactly.

Bits per weight per layer (everything stored for that tensor, codebook and code tables included) go
into the manifest (``codebook.layers``) and the result (``storage_layers``, ``storage_bits_per_weight``).
Structured-pruning records passed in the options (``pruning``) are kept in the manifest, as the
``sparse`` codec does, so ``prune.rebuild`` works on a clustered artifact too.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import _tensors, rewrite_manifest
from ._huffman import CorruptStream
from ._symbols import ENTROPY
from .. import artifact
from ..config import parse
from ..errors import ModelFileError

ENCODING = "codebook"
GRAPH = "graph.onnx"
WEIGHTS = "weights.mpcb"
MAGIC = b"MPCB"
VERSION = 1
MAX_NUMEL = 1 << 32
_PREFIX = len(MAGIC) + 1 + 32


@dataclass(frozen=True)
class CodecConfig:
    entropy: Literal["huffman", "zstd", "none"] = "huffman"


def pack(tensors: list[tuple[str, np.ndarray]], entropy: str, graph_sha256: str = "") -> tuple[bytes, list[dict]]:
    """The ``weights.mpcb`` bytes for named float32 arrays, and each tensor's header record."""
    records, segments = [], []
    for name, array in tensors:
        rec, segs = _tensors.encode(array, entropy)
        records.append({"name": name, "shape": list(array.shape), **rec, "bytes": [len(s) for s in segs]})
        segments += segs
    header = {"entropy": entropy, "graph_sha256": graph_sha256, "tensors": records}
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    body = struct.pack("<I", len(head)) + head + b"".join(segments)
    return MAGIC + bytes([VERSION]) + hashlib.sha256(body).digest() + body, records


def _corrupt(where: Any, why: str) -> ModelFileError:
    return ModelFileError(f"The codebook weights file {where} is corrupted: {why}. Export the model again "
                          f"(for example rerun the recipe with 'modelpress run ... --force').")


def _check_record(rec: Any, where: Any) -> tuple[str, tuple[int, ...], list[int]]:
    ok = (isinstance(rec, dict) and isinstance(rec.get("name"), str) and isinstance(rec.get("shape"), list)
          and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in rec["shape"])
          and isinstance(rec.get("bytes"), list)
          and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in rec["bytes"]))
    if not ok:
        raise _corrupt(where, f"a tensor entry in its header is malformed ({str(rec)[:120]})")
    shape = tuple(rec["shape"])
    if int(np.prod(shape, dtype=np.float64)) > MAX_NUMEL:
        raise _corrupt(where, f"tensor '{rec['name']}' claims an impossible shape {list(shape)}")
    return rec["name"], shape, rec["bytes"]


def unpack(data: bytes, where: Any = "weights.mpcb") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode ``weights.mpcb`` bytes into ``{name: float32 array}`` and its header; every check fails
    with a :class:`ModelFileError` that says the file is corrupted."""
    if len(data) < _PREFIX + 4 or data[:len(MAGIC)] != MAGIC:
        raise _corrupt(where, "it does not start with the codebook file marker (wrong or truncated file)")
    if data[len(MAGIC)] != VERSION:
        raise ModelFileError(f"The codebook weights file {where} has format version {data[len(MAGIC)]}; this "
                             f"modelpress reads version {VERSION}. Use a matching modelpress or export again.")
    body = data[_PREFIX:]
    if hashlib.sha256(body).digest() != data[len(MAGIC) + 1:_PREFIX]:
        raise _corrupt(where, "its content does not match its SHA-256 checksum (truncated or modified)")
    (head_len,) = struct.unpack_from("<I", body)
    try:
        header = json.loads(zlib.decompress(body[4:4 + head_len]))
    except (zlib.error, ValueError):
        raise _corrupt(where, "its header is unreadable") from None
    if (not isinstance(header, dict) or header.get("entropy") not in ENTROPY
            or not isinstance(header.get("tensors"), list)):
        raise _corrupt(where, "its header lacks a valid 'entropy' or 'tensors' entry")
    payload = memoryview(body)[4 + head_len:]
    entries = [_check_record(rec, where) for rec in header["tensors"]]
    if sum(sum(sizes) for _, _, sizes in entries) != len(payload):
        raise _corrupt(where, "the segment sizes in its header do not add up to the payload")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for rec, (name, shape, sizes) in zip(header["tensors"], entries):
        if name in out:
            raise _corrupt(where, f"tensor '{name}' appears twice")
        segments = []
        for size in sizes:
            segments.append(bytes(payload[offset:offset + size]))
            offset += size
        try:
            out[name] = _tensors.decode(rec, shape, segments, header["entropy"])
        except (CorruptStream, ValueError, IndexError, TypeError, KeyError) as e:  # fields that do not fit together
            raise _corrupt(where, f"tensor '{name}': {e}") from None
    return out, header


def _param_names(model: Any, tensors: list[tuple[str, np.ndarray]]) -> dict[str, str]:
    """ONNX initializer name -> the model's parameter name, matched by exact content (the exporter may
    rename a weight, e.g. ``onnx::MatMul_12`` for a transposed Linear weight)."""
    def key(a: np.ndarray) -> tuple:
        return a.shape, hashlib.sha1(np.ascontiguousarray(a, "<f4").tobytes()).hexdigest()

    known: dict[tuple, str] = {}
    for name, p in getattr(model, "named_parameters", lambda: [])():
        a = p.detach().cpu().float().numpy()
        known.setdefault(key(a), name)
        if a.ndim == 2:
            known.setdefault(key(a.T), name)
    return {n: known.get(key(a), n) for n, a in tensors}


def layer_table(records: list[dict], tensors: list[tuple[str, np.ndarray]], names: dict[str, str]) -> dict[str, dict]:
    """Per weight tensor (2 or more dimensions): weights, sparsity, clusters, layout, bytes, bits per weight."""
    table = {}
    for rec, (onnx_name, array) in zip(records, tensors):
        if array.ndim < 2:
            continue
        size = sum(rec["bytes"])
        nonzero = int(np.count_nonzero(array))
        table[names.get(onnx_name, onnx_name)] = {
            "weights": int(array.size), "sparsity": round(1 - nonzero / max(array.size, 1), 6),
            "clusters": rec.get("k"), "per_channel": rec.get("axis") is not None, "layout": rec.get("layout", "raw"),
            "bytes": size, "bits_per_weight": round(8 * size / max(array.size, 1), 4),
            "bits_per_nonzero": round(8 * size / max(nonzero, 1), 4)}
    return table


def encode(art: artifact.Artifact, model: Any, options: dict[str, Any]) -> artifact.Artifact:
    """Rewrite an exported ONNX artifact in place as ``graph.onnx`` + ``weights.mpcb``."""
    import onnx
    from onnx import numpy_helper

    options = dict(options)
    pruning = list(options.pop("pruning", []))  # structured-pruning records, kept in the manifest
    config = parse(CodecConfig, options, "storage.codebook")
    if art.format != "onnx":
        note = (f"The codebook storage encodes ONNX artifacts; this {art.format} artifact is stored as exported "
                f"(export with format: onnx to store it clustered).")
        others = tuple(f for f in art.manifest["files"] if f != art.manifest["file"])  # e.g. OpenVINO's model.bin
        return rewrite_manifest(art, art.manifest["file"], extra_files=others,
                                facts={**art.manifest.get("facts", {}), "storage_note": note})
    proto = onnx.load(str(art.path))
    graph = proto.graph
    moved = [i for i, t in enumerate(graph.initializer)
             if t.data_type == onnx.TensorProto.FLOAT and t.data_location != onnx.TensorProto.EXTERNAL]
    tensors = [(graph.initializer[i].name, numpy_helper.to_array(graph.initializer[i])) for i in moved]
    for i in reversed(moved):
        del graph.initializer[i]
    proto.doc_string = graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
    graph_bytes = proto.SerializeToString()
    blob, records = pack(tensors, config.entropy, hashlib.sha256(graph_bytes).hexdigest())
    artifact.atomic_write_bytes(art.folder / GRAPH, graph_bytes)
    artifact.atomic_write_bytes(art.folder / WEIGHTS, blob)
    if art.manifest["file"] not in (GRAPH, WEIGHTS):
        art.path.unlink(missing_ok=True)
    layers = layer_table(records, tensors, _param_names(model, tensors))
    total_weights = sum(a.size for _, a in tensors)
    summary = {"entropy": config.entropy, "graph_bytes": len(graph_bytes), "weights_bytes": len(blob),
               "bits_per_weight": round(8 * len(blob) / max(total_weights, 1), 4), "layers": layers}
    fields = {"pruning": pruning} if pruning else {}
    facts = {**art.manifest.get("facts", {}), "storage_encoding": ENCODING, "storage_entropy": config.entropy,
             "storage_bytes": len(graph_bytes) + len(blob), "storage_bits_per_weight": summary["bits_per_weight"],
             "storage_layers": layers}
    return rewrite_manifest(art, GRAPH, extra_files=(WEIGHTS,), encoding=ENCODING, **{ENCODING: summary}, **fields,
                            facts=facts)


def decode(art: artifact.Artifact) -> Path:
    """A dense ONNX file rebuilt from ``graph.onnx`` and ``weights.mpcb`` (in a temporary folder that is
    removed when the process exits)."""
    import onnx
    from onnx import numpy_helper

    paths = {name: art.folder / name for name in (GRAPH, WEIGHTS)}
    for path in paths.values():
        if not path.exists():
            raise ModelFileError(f"The codebook artifact file {path} is missing; export the model again.")
    tensors, header = unpack(paths[WEIGHTS].read_bytes(), paths[WEIGHTS])
    graph_bytes = paths[GRAPH].read_bytes()
    if hashlib.sha256(graph_bytes).hexdigest() != header.get("graph_sha256"):
        raise ModelFileError(f"{paths[GRAPH]} does not match the graph its weights file was written for (truncated, "
                             f"modified or mixed with another export); export the model again.")
    proto = onnx.load_from_string(graph_bytes)
    taken = {t.name for t in proto.graph.initializer}
    for name, array in tensors.items():
        if name in taken:
            raise _corrupt(paths[WEIGHTS], f"tensor '{name}' is also stored in the graph")
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
    folder = Path(tempfile.mkdtemp(prefix="modelpress-decoded-"))
    atexit.register(shutil.rmtree, folder, True)
    out = folder / "model.onnx"
    artifact.atomic_write_bytes(out, proto.SerializeToString())
    return out
