"""``predict`` inputs: NaN/Inf, empty batches and hostile .npy/.npz files are clear errors, never tracebacks
or silent garbage."""
from __future__ import annotations

import io
import resource
import struct
import time
import zipfile

import numpy as np
import pytest

from modelpress.cli import main

from .hostile import runner


def npy_header(shape, dtype="<f4") -> bytes:
    """A .npy header declaring ``shape`` (numpy pads the dict to 64 bytes)."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def predict(bundle, path, *extra):
    return main(["predict", str(bundle), str(path), *extra])


def test_nonfinite_inputs_are_an_error_unless_allowed(bundle, tmp_path, digits_x, capsys):
    for bad in (np.nan, np.inf, -np.inf):
        x = digits_x.copy()
        x[2, 0, 3, 3] = bad
        np.save(tmp_path / "x.npy", x)
        assert predict(bundle, tmp_path / "x.npy") == 2
        assert "holds NaN or Inf in 1 of 5 sample(s)" in capsys.readouterr().err
        done = runner(bundle, str(tmp_path / "x.npy"))
        assert done.returncode != 0 and "NaN or Inf" in done.stderr
    assert predict(bundle, tmp_path / "x.npy", "--allow-nonfinite", "-o", str(tmp_path / "y.npy")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(1 sample(s) hold NaN or Inf)" in out and "'nan'" in out  # never a made-up class 0
    assert np.isnan(np.load(tmp_path / "y.npy")[2]).all()


def test_nonfinite_outputs_are_an_error_and_nothing_is_written(bundle, tmp_path, digits_x, capsys):
    np.save(tmp_path / "big.npy", np.full_like(digits_x, 3e38))  # finite, but overflows inside the model
    assert predict(bundle, tmp_path / "big.npy", "-o", str(tmp_path / "y.npy")) == 2
    assert "produced NaN or Inf in output 'logits'" in capsys.readouterr().err
    assert not (tmp_path / "y.npy").exists()


def test_empty_batches_are_a_clear_error(bundle, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    assert predict(bundle, tmp_path / "empty.npy") == 2
    assert "holds 0 samples" in capsys.readouterr().err
    assert "0 samples" in runner(bundle, str(tmp_path / "empty.npy")).stderr
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    assert predict(bundle, tmp_path / "empty.npz") == 2


def test_npz_with_objects_or_huge_shapes_is_refused_without_allocating(bundle, tmp_path, capsys):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    assert predict(bundle, tmp_path / "obj.npz") == 2
    assert "would need unpickling" in capsys.readouterr().err
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for shape in ((10**12, 1, 8, 8), (2**62, 2**62), (2, 1, 8, 8)):  # the last: declared, but the data is cut
        with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
            z.writestr("x.npy", npy_header(shape) + b"\0" * 64)
        (tmp_path / "huge.npy").write_bytes(npy_header(shape) + b"\0" * 64)
        for path in (tmp_path / "huge.npz", tmp_path / "huge.npy"):
            t0 = time.perf_counter()
            assert predict(bundle, path) == 2
            assert time.perf_counter() - t0 < 10
            err = capsys.readouterr().err
            assert "declares" in err and "Traceback" not in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB


@pytest.mark.parametrize("payload", [
    b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00\xff\xff{", b"PK\x05\x06" + b"\0" * 18, b"not an array at all",
    npy_header((2, 1, 8, 8), "|O"), npy_header((2, 1, 8, 8), "<V0"),
])
def test_damaged_array_files_are_clear_errors(bundle, tmp_path, payload, capsys):
    (tmp_path / "x.npy").write_bytes(payload)
    assert predict(bundle, tmp_path / "x.npy") == 2
    err = capsys.readouterr().err
    assert err.startswith("modelpress: error:") and "Traceback" not in err


def test_npz_members_and_names(bundle, tmp_path, digits_x, capsys):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(300):
            z.writestr(f"a{i}.npy", b"")
    (tmp_path / "many.npz").write_bytes(buf.getvalue())
    assert predict(bundle, tmp_path / "many.npz") == 2
    assert "at most 256" in capsys.readouterr().err
    np.savez(tmp_path / "two.npz", x=digits_x, y=digits_x)
    assert predict(bundle, tmp_path / "two.npz") == 2
    assert "expects exactly ['x']" in capsys.readouterr().err
