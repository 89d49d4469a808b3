"""Encode one float32 tensor as a codebook plus indices (dense or sparse), or keep it raw.

A tensor with at most 256 distinct values (per tensor, or per slice along its first or last axis) is
stored as ``codebook`` (float32 ``[groups, k]``, exact values) plus one index per weight:

- ``dense`` layout: the index of every weight;
- ``sparse`` layout: only nonzero weights, as their indices plus relative positions (runs of zeros,
  see ``_symbols.positions_to_runs``); the escape width is picked per tensor.

Every applicable form is encoded and the smallest kept, so a tensor is never stored larger than raw.
Decoding is exact: the decoded array equals the encoded one value for value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._huffman import CorruptStream
from ._symbols import decode_stream, encode_stream, positions_to_runs, runs_to_positions

MAX_CODEBOOK = 256
ESCAPE_BITS = range(1, 9)  # run-length symbols of 1..8 bits (escape = 2**bits - 1)


def group_rows(array: np.ndarray, axis: int | None) -> np.ndarray:
    """``[groups, n]``: the whole tensor as one row, or one row per slice along ``axis``."""
    return array.reshape(1, -1) if axis is None else np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)


def ungroup_rows(rows: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    if axis is None:
        return rows.reshape(shape)
    moved = (shape[axis], *shape[:axis], *shape[axis + 1:])
    return np.moveaxis(rows.reshape(moved), 0, axis)


def codebook(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per row, its distinct values (padded to a common ``k``) and every weight's index; None if a row
    has more than ``MAX_CODEBOOK`` distinct values."""
    books, index = [], np.zeros(rows.shape, np.int64)
    for r, row in enumerate(rows):
        values = np.unique(row)
        if len(values) > MAX_CODEBOOK:
            return None
        books.append(values)
        index[r] = np.searchsorted(values, row)
    k = max(len(b) for b in books)
    return np.stack([np.pad(b, (0, k - len(b)), mode="edge") for b in books]).astype("<f4"), index


def axes(array: np.ndarray) -> list[int | None]:
    if array.ndim < 2:
        return [None]
    return [None, 0, *([array.ndim - 1] if array.ndim - 1 != 0 else [])]


def encode(array: np.ndarray, entropy: str) -> tuple[dict[str, Any], list[bytes]]:
    """``(record, segments)``: the header record of the smallest encoding and its payload segments."""
    array = np.ascontiguousarray(array, dtype="<f4")
    best: tuple[dict[str, Any], list[bytes]] = ({"kind": "raw"}, [array.tobytes()])
    for axis in axes(array) if array.size else []:
        rows = group_rows(array, axis)
        coded = codebook(rows)
        if coded is None:
            continue
        book, index = coded
        k = book.shape[1]
        flat_index = index.ravel()
        base = {"kind": "codebook", "axis": axis, "k": k}
        options = [({**base, "layout": "dense"}, [book.tobytes(), encode_stream(flat_index, k, entropy)])]
        nonzero = np.flatnonzero(rows.ravel() != 0)
        if len(nonzero) < rows.size:
            values = encode_stream(flat_index[nonzero], k, entropy)
            for bits in ESCAPE_BITS:
                escape = (1 << bits) - 1
                runs = positions_to_runs(nonzero, escape)
                sparse = {**base, "layout": "sparse", "escape": escape, "count": len(nonzero), "runs": len(runs)}
                options.append((sparse,
                                [book.tobytes(), values, encode_stream(runs, escape + 1, entropy)]))
        for option in options:
            if sum(map(len, option[1])) < sum(map(len, best[1])):
                best = option
    return best


def _int(record: dict[str, Any], key: str, low: int, high: int) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CorruptStream(f"field '{key}' is {value!r}, expected a whole number in [{low}, {high}]")
    return value


def decode(record: dict[str, Any], shape: tuple[int, ...], segments: list[bytes], entropy: str) -> np.ndarray:
    """Inverse of :func:`encode`; raises :class:`CorruptStream` on any inconsistency."""
    numel = int(np.prod(shape, dtype=np.int64))
    if record.get("kind") == "raw":
        if len(segments) != 1 or len(segments[0]) != 4 * numel:
            raise CorruptStream(f"a raw tensor of {numel} weights needs {4 * numel} bytes")
        return np.frombuffer(segments[0], dtype="<f4").reshape(shape).astype(np.float32)
    if record.get("kind") != "codebook" or numel == 0:
        raise CorruptStream(f"unknown tensor kind {record.get('kind')!r} for a tensor of {numel} weights")
    axis = record.get("axis")
    if axis is not None:
        axis = _int(record, "axis", 0, max(0, len(shape) - 1))
    groups = 1 if axis is None else shape[axis]
    per_group = numel // max(groups, 1)
    k = _int(record, "k", 1, MAX_CODEBOOK)
    layout = record.get("layout")
    if layout not in ("dense", "sparse") or len(segments) != (2 if layout == "dense" else 3):
        raise CorruptStream(f"unknown layout {layout!r} or wrong number of segments")
    if len(segments[0]) != 4 * groups * k:
        raise CorruptStream(f"the codebook holds {len(segments[0])} bytes, expected {4 * groups * k}")
    book = np.frombuffer(segments[0], dtype="<f4").reshape(groups, k)
    if not np.isfinite(book).all():
        raise CorruptStream("the codebook holds NaN or Inf")
    if layout == "dense":
        index = decode_stream(segments[1], k, numel, entropy)
        rows = book[np.arange(numel) // max(per_group, 1), index] if numel else np.zeros(0, np.float32)
    else:
        count = _int(record, "count", 0, numel)
        escape = _int(record, "escape", 1, (1 << max(ESCAPE_BITS)) - 1)
        n_runs = _int(record, "runs", count, count + numel)
        positions = runs_to_positions(decode_stream(segments[2], escape + 1, n_runs, entropy), escape, count, numel)
        index = decode_stream(segments[1], k, count, entropy)
        rows = np.zeros(numel, np.float32)
        rows[positions] = book[positions // max(per_group, 1), index]
    return ungroup_rows(np.asarray(rows, np.float32).reshape(groups, -1), tuple(shape), axis)
