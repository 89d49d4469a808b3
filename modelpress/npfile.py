"""Reading user ``.npy`` / ``.npz`` files safely: never unpickled, never larger than their header's promise.

Each array's header is read first; an array of Python objects (which would need unpickling), a header
that declares more data than the file holds, or more than :data:`MAX_ARRAY_BYTES`, is refused before any
memory is allocated for it. An ``.npz`` is a zip of ``.npy`` members: the same checks apply to each one,
and the archive may hold at most :data:`MAX_MEMBERS` of them.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.arange(3))
>>> read_npy(io.BytesIO(buf.getvalue()), len(buf.getvalue()), "x.npy").tolist()
[0, 1, 2]
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from .errors import ModelFileError, shown

MAX_ARRAY_BYTES = 4 << 30  # one input array
MAX_MEMBERS = 256  # arrays in one .npz


def _header(stream: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data bytes) from a .npy header, refusing objects and oversized arrays."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(stream)
    except Exception as e:
        raise ModelFileError(f"{where} is not a readable .npy array ({shown(e, 150)}).") from None
    if dtype.hasobject:
        raise ModelFileError(f"{where} holds Python objects, which would need unpickling; refusing it. Save plain "
                             f"numeric arrays (np.save(path, x.astype(np.float32))).")
    if any(d < 0 for d in shape) or dtype.itemsize == 0:
        raise ModelFileError(f"{where} declares a negative shape {shown(list(shape), 60)} or empty elements "
                             f"({dtype}); it is damaged.")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise ModelFileError(f"{where} declares {nbytes:,} bytes of data (shape {shown(list(shape), 60)}); at most "
                             f"{MAX_ARRAY_BYTES:,} are read. Split the input into smaller batches.")
    return shape, fortran, dtype, nbytes


def read_npy(stream: IO[bytes], size: int, where: str) -> np.ndarray:
    """The array in ``stream`` (``size`` bytes of .npy data), checked against its header before loading."""
    shape, fortran, dtype, nbytes = _header(stream, where)
    data = stream.read(nbytes) if nbytes <= size - stream.tell() else b""
    if len(data) < nbytes:
        raise ModelFileError(f"{where} declares {nbytes:,} bytes of data but holds fewer; it is truncated or damaged.")
    try:
        flat = np.frombuffer(data, dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C").copy()
    except Exception as e:
        raise ModelFileError(f"{where} is not a readable .npy array ({shown(e, 150)}).") from None


def read_arrays(path: str | Path) -> np.ndarray | dict[str, np.ndarray]:
    """One array from a ``.npy`` file, or the arrays of an ``.npz`` file by name."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Input file {shown(path)} does not exist or is not a regular file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY" and zipfile.is_zipfile(f):
            return _read_npz(path)
        f.seek(0)
        return read_npy(f, size, shown(path))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    where = shown(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if len(members) > MAX_MEMBERS:
                raise ModelFileError(f"{where} holds {len(members):,} arrays; at most {MAX_MEMBERS} are read.")
            arrays: dict[str, np.ndarray] = {}
            for m in members:
                name = m.filename[:-4] if m.filename.endswith(".npy") else m.filename
                if name in arrays:
                    raise ModelFileError(f"{where} holds the array '{shown(name, 60)}' twice; it is damaged.")
                label = f"{where}[{shown(name, 60)}]"
                with z.open(m) as member:
                    arrays[name] = read_npy(member, m.file_size, label)
            return arrays
    except ModelFileError:
        raise
    except Exception as e:  # BadZipFile, CRC errors, encrypted or unsupported members
        raise ModelFileError(f"{where} is not a readable .npz file ({shown(e, 150)}).") from None


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive of ``arrays`` (any names, even ``file``, which ``np.savez`` would reject)."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()
