"""Canonical Huffman coding of small-alphabet symbol arrays (codebook indices, run lengths).

Codes are limited to ``MAX_BITS`` bits so that a decoder table has at most 2**15 entries and every code
length fits a 4-bit nibble. Bits are written most significant first. A code table is stored as a
bitmap of the used symbols followed by their code lengths as nibbles; canonical codes follow from the
lengths alone.

>>> import numpy as np
>>> symbols = np.array([0, 0, 0, 1, 2, 0, 1, 0])
>>> lengths = code_lengths(np.bincount(symbols))
>>> lengths.tolist()
[1, 2, 2]
>>> decode(encode(symbols, lengths), lengths, len(symbols)).tolist() == symbols.tolist()
True
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_BITS = 15
_CHUNK_SYMBOLS = 1 << 20  # encode this many symbols at a time (bounds temporary memory)
_CHUNK_BITS = 1 << 23  # decode this many bits at a time


class CorruptStream(ValueError):
    """A coded stream or code table that cannot have been written by :func:`encode`."""


def _depths(freqs: np.ndarray) -> np.ndarray:
    """Leaf depths of a Huffman tree for ``freqs`` (all positive, at least two)."""
    heap = [(int(f), i) for i, f in enumerate(freqs)]
    heapq.heapify(heap)
    parent = list(range(len(freqs)))
    next_id = len(freqs)
    while len(heap) > 1:
        f1, a = heapq.heappop(heap)
        f2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        parent.append(next_id)
        heapq.heappush(heap, (f1 + f2, next_id))
        next_id += 1
    root = next_id - 1
    depth = [0] * next_id
    for node in range(root - 1, -1, -1):  # parents have larger ids than children
        depth[node] = depth[parent[node]] + 1
    return np.asarray(depth[:len(freqs)], dtype=np.int64)


def code_lengths(freqs: np.ndarray, max_bits: int = MAX_BITS) -> np.ndarray:
    """Code length per symbol (0 for symbols that never occur), each at most ``max_bits``.

    When the optimal tree is deeper than ``max_bits``, the frequencies are halved (keeping every used
    symbol at least 1) until it fits; this costs a fraction of a bit only on very skewed data.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    lengths = np.zeros(len(freqs), dtype=np.int64)
    used = np.flatnonzero(freqs > 0)
    if len(used) == 1:
        lengths[used] = 1
    elif len(used) > 1:
        f = freqs[used]
        while True:
            depth = _depths(f)
            if depth.max() <= max_bits:
                break
            f = np.maximum(1, f >> 1)
        lengths[used] = depth
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of every symbol: shorter codes first, ties in symbol order."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s] = code
        code += 1
        prev = int(lengths[s])
    return codes


def encoded_bits(freqs: np.ndarray, lengths: np.ndarray) -> int:
    return int((np.asarray(freqs, np.int64) * lengths).sum())


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The symbols' codes, concatenated and packed into bytes (zero-padded to a whole byte)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= len(lengths) or (lengths[symbols] == 0).any()):
        raise ValueError("a symbol has no code: build the lengths from these symbols' frequencies")
    codes = canonical_codes(lengths)
    pieces = []
    for start in range(0, len(symbols), _CHUNK_SYMBOLS):
        s = symbols[start:start + _CHUNK_SYMBOLS]
        lens, vals = lengths[s], codes[s]
        total = int(lens.sum())
        starts = np.cumsum(lens) - lens
        owner = np.repeat(np.arange(len(s)), lens)
        shift = np.repeat(lens, lens) - 1 - (np.arange(total) - starts[owner])
        pieces.append(((vals[owner] >> shift) & 1).astype(np.uint8))
    bits = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    return np.packbits(bits).tobytes()


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols from ``data``; raises :class:`CorruptStream` when the bits do not decode."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        raise CorruptStream("the code table is empty but the stream holds symbols")
    width = int(lengths.max())
    codes = canonical_codes(lengths)
    table_symbol = np.zeros(1 << width, dtype=np.int64)
    table_length = np.zeros(1 << width, dtype=np.int64)  # 0 marks a bit pattern that starts no code
    for s in used:
        lo = int(codes[s]) << (width - int(lengths[s]))
        hi = (int(codes[s]) + 1) << (width - int(lengths[s]))
        table_symbol[lo:hi], table_length[lo:hi] = s, lengths[s]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    total = len(bits)
    bits = np.concatenate([bits, np.zeros(width, np.uint8)])
    out: list[int] = []
    pos = 0
    for chunk in range(0, total, _CHUNK_BITS):
        end = min(chunk + _CHUNK_BITS, total)
        window = np.zeros(end - chunk, dtype=np.int64)
        for j in range(width):  # the `width` bits starting at every position, as one integer
            window = (window << 1) | bits[chunk + j:end + j]
        steps = table_length[window].tolist()
        starts = []
        while pos < end and len(out) + len(starts) < count:
            step = steps[pos - chunk]
            if step == 0:
                raise CorruptStream(f"invalid code at bit {pos}")
            starts.append(pos - chunk)
            pos += step
        out.extend(table_symbol[window[starts]].tolist() if starts else [])
        if len(out) == count:
            break
    if len(out) < count or pos > total:
        raise CorruptStream(f"the stream ends after {len(out)} of {count} symbols")
    return np.asarray(out, dtype=np.int64)


def pack_table(lengths: np.ndarray) -> bytes:
    """Bitmap of used symbols (alphabet order), then each used symbol's code length as a nibble."""
    used = lengths > 0
    nibbles = lengths[used].astype(np.uint8)
    if len(nibbles) % 2:
        nibbles = np.append(nibbles, 0)
    return np.packbits(used).tobytes() + ((nibbles[0::2] << 4) | nibbles[1::2]).astype(np.uint8).tobytes()


def unpack_table(data: bytes, alphabet: int) -> tuple[np.ndarray, int]:
    """Code lengths for an ``alphabet``-symbol table at the start of ``data``; returns (lengths, bytes read)."""
    head = (alphabet + 7) // 8
    if len(data) < head:
        raise CorruptStream("the code table is truncated")
    used = np.unpackbits(np.frombuffer(data[:head], np.uint8))[:alphabet].astype(bool)
    n = int(used.sum())
    size = head + (n + 1) // 2
    if len(data) < size:
        raise CorruptStream("the code table is truncated")
    packed = np.frombuffer(data[head:size], np.uint8)
    nibbles = np.stack([packed >> 4, packed & 15], axis=1).ravel()[:n].astype(np.int64)
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[used] = nibbles
    if n and (nibbles.min() < 1 or (n > 1 and np.sum(2.0 ** -nibbles) > 1.0) or (n == 1 and nibbles[0] != 1)):
        raise CorruptStream("the code table's lengths do not form a prefix code")
    return lengths, size
