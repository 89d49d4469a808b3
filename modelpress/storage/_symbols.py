"""Symbol streams for the codebook codec: fixed-width bit packing, Huffman or zstd on top, and the
relative-index (run-length) encoding of sparse positions used by Deep Compression.

A stream is an array of small non-negative integers below ``alphabet``. Its encoded form:

- ``none``: each symbol in ``bit_width(alphabet)`` bits, packed most significant bit first;
- ``huffman``: a canonical Huffman table (see ``_huffman.pack_table``) followed by the codes;
- ``zstd``: the ``none`` bytes compressed by zstd at level 19 (for comparison; needs ``zstandard``).

>>> import numpy as np
>>> runs = positions_to_runs(np.array([2, 3, 20]), escape=7)
>>> runs.tolist()   # 2 zeros then a weight, 0 zeros then a weight, 7 + 7 + 2 zeros then a weight
[2, 0, 7, 7, 2]
>>> runs_to_positions(runs, 7, count=3, numel=21).tolist()
[2, 3, 20]
"""
from __future__ import annotations

import numpy as np

from . import _huffman
from ._huffman import CorruptStream
from ..errors import ModelpressError

ENTROPY = ("huffman", "zstd", "none")
ZSTD_LEVEL = 19


def bit_width(alphabet: int) -> int:
    """Bits to store one symbol below ``alphabet`` (at least 1)."""
    return max(1, int(alphabet - 1).bit_length())


def pack_fixed(symbols: np.ndarray, bits: int) -> bytes:
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((np.asarray(symbols, np.int64)[:, None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


def unpack_fixed(data: bytes, bits: int, count: int) -> np.ndarray:
    if len(data) < (count * bits + 7) // 8:
        raise CorruptStream(f"the stream is truncated ({len(data)} bytes for {count} symbols of {bits} bits)")
    raw = np.unpackbits(np.frombuffer(data, np.uint8))[:count * bits].reshape(count, bits).astype(np.int64)
    return raw @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise ModelpressError("The zstd entropy coder needs the 'zstandard' package: pip install 'modelpress[cluster]' "
                              "(or choose entropy: huffman).") from None
    return zstandard


def encode_stream(symbols: np.ndarray, alphabet: int, entropy: str) -> bytes:
    symbols = np.asarray(symbols, np.int64)
    if entropy == "huffman":
        lengths = _huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
        return _huffman.pack_table(lengths) + _huffman.encode(symbols, lengths)
    packed = pack_fixed(symbols, bit_width(alphabet))
    if entropy == "zstd":
        return _zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(packed)
    if entropy == "none":
        return packed
    raise ValueError(f"unknown entropy coder {entropy!r}; choose one of {', '.join(ENTROPY)}")


def decode_stream(data: bytes, alphabet: int, count: int, entropy: str) -> np.ndarray:
    """Inverse of :func:`encode_stream`; raises :class:`CorruptStream` on bytes it cannot have written."""
    if entropy == "huffman":
        lengths, used = _huffman.unpack_table(data, alphabet)
        return _huffman.decode(data[used:], lengths, count)
    if entropy == "zstd":
        zstd = _zstd()
        limit = (count * bit_width(alphabet) + 7) // 8
        try:
            data = zstd.ZstdDecompressor().decompress(data, max_output_size=limit)
        except zstd.ZstdError as e:
            raise CorruptStream(f"zstd cannot decompress the stream ({e})") from None
    elif entropy != "none":
        raise CorruptStream(f"unknown entropy coder {entropy!r}")
    symbols = unpack_fixed(data, bit_width(alphabet), count)
    if count and symbols.max() >= alphabet:
        raise CorruptStream(f"a symbol {int(symbols.max())} is outside the alphabet of {alphabet}")
    return symbols


def positions_to_runs(positions: np.ndarray, escape: int) -> np.ndarray:
    """Relative indices: per position, the zeros skipped since the previous one (``escape`` and above
    are written as one ``escape`` symbol per ``escape`` zeros skipped with no weight, then the rest)."""
    gaps = np.diff(np.asarray(positions, np.int64), prepend=-1) - 1
    escapes = gaps // escape
    runs = np.full(len(gaps) + int(escapes.sum()), escape, dtype=np.int64)
    runs[np.cumsum(escapes + 1) - 1] = gaps % escape
    return runs


def runs_to_positions(runs: np.ndarray, escape: int, count: int, numel: int) -> np.ndarray:
    """Inverse of :func:`positions_to_runs` for ``count`` positions below ``numel``."""
    real = runs != escape
    if int(real.sum()) != count:
        raise CorruptStream(f"the run-length stream holds {int(real.sum())} weights, the header says {count}")
    positions = np.cumsum(np.where(real, runs, escape))[real] + np.arange(count)
    if count and positions[-1] >= numel:
        raise CorruptStream(f"a sparse position {int(positions[-1])} is outside the tensor of {numel} weights")
    return positions
