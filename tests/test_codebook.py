"""The codebook storage codec: Huffman and run-length streams, exact tensor round trips, artifacts that
decode to the same runnable ONNX model, and clear errors for damaged files."""
import copy
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpress import artifact
from modelpress.compress import cluster
from modelpress.errors import ModelFileError
from modelpress.export import onnx as onnx_export
from modelpress.runtime import open_session
from modelpress.storage import _huffman, _symbols, _tensors, codebook
from modelpress.zoo import LeNet300100

from .test_cluster import mlp_task, sparsified

# --- Huffman ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=400), st.integers(41, 300))
def test_huffman_round_trip_and_table(symbols, alphabet):
    symbols = np.asarray(symbols, np.int64)
    lengths = _huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    table = _huffman.pack_table(lengths)
    parsed, used = _huffman.unpack_table(table + b"rest", alphabet)
    assert used == len(table) and np.array_equal(parsed, lengths)
    assert np.array_equal(_huffman.decode(_huffman.encode(symbols, lengths), lengths, len(symbols)), symbols)
    if len(set(symbols.tolist())) > 1:
        assert np.isclose(np.sum(2.0 ** -lengths[lengths > 0]), 1.0)  # a complete prefix code


def test_huffman_is_within_one_bit_of_the_entropy_and_limits_code_length():
    rng = np.random.default_rng(0)
    symbols = rng.choice(32, size=20000, p=np.r_[0.5, np.full(31, 0.5 / 31)])
    freqs = np.bincount(symbols, minlength=32)
    p = freqs[freqs > 0] / len(symbols)
    entropy_bits = -(p * np.log2(p)).sum() * len(symbols)
    bits = _huffman.encoded_bits(freqs, _huffman.code_lengths(freqs))
    assert entropy_bits <= bits <= entropy_bits + len(symbols)
    fibonacci = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946])
    assert _huffman._depths(fibonacci).max() == 20  # the unlimited Huffman tree
    lengths = _huffman.code_lengths(fibonacci)
    assert lengths.max() <= _huffman.MAX_BITS and np.sum(2.0 ** -lengths) <= 1.0
    seq = np.repeat(np.arange(len(fibonacci)), fibonacci)
    assert np.array_equal(_huffman.decode(_huffman.encode(seq, lengths), lengths, len(seq)), seq)


def test_huffman_rejects_damaged_streams():
    symbols = np.array([0, 1, 2, 2, 2, 2, 3])
    lengths = _huffman.code_lengths(np.bincount(symbols))
    data = _huffman.encode(symbols, lengths)
    with pytest.raises(_huffman.CorruptStream, match="ends after"):
        _huffman.decode(data[:1], lengths, 50)
    with pytest.raises(_huffman.CorruptStream, match="prefix code"):
        _huffman.unpack_table(bytes([0b11100000, 0x11, 0x10]), 3)  # three codes of length 1


# --- streams ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=300), st.integers(1, 8))
def test_relative_positions_round_trip(positions, bits):
    positions = np.array(sorted(positions), np.int64)
    escape = (1 << bits) - 1
    runs = _symbols.positions_to_runs(positions, escape)
    assert runs.max(initial=0) <= escape
    assert np.array_equal(_symbols.runs_to_positions(runs, escape, len(positions), 5001), positions)


@pytest.mark.parametrize("entropy", _symbols.ENTROPY)
def test_streams_round_trip(entropy):
    symbols = np.random.default_rng(0).integers(0, 23, 1000)
    data = _symbols.encode_stream(symbols, 23, entropy)
    assert np.array_equal(_symbols.decode_stream(data, 23, 1000, entropy), symbols)
    if entropy == "none":
        assert len(data) == 1000 * 5 // 8
        with pytest.raises(_huffman.CorruptStream, match="truncated"):
            _symbols.decode_stream(data[:-10], 23, 1000, entropy)


# --- tensors ---------------------------------------------------------------------------------------


def clustered_array(shape, k, sparsity, per_channel=False, seed=0):
    rng = np.random.default_rng(seed)
    if per_channel:
        books = rng.standard_normal((shape[0], k)).astype(np.float32)
        a = books[np.arange(shape[0])[:, None], rng.integers(0, k, (shape[0], int(np.prod(shape[1:]))))]
    else:
        a = rng.standard_normal(k).astype(np.float32)[rng.integers(0, k, shape)]
    a = a.reshape(shape)
    a[rng.random(shape) < sparsity] = 0
    return a


@pytest.mark.parametrize("shape, k, sparsity, per_channel, kind, layout", [
    ((300, 784), 32, 0.95, False, "codebook", "sparse"),
    ((100, 300), 16, 0.0, False, "codebook", "dense"),
    ((50, 20, 5, 5), 16, 0.3, True, "codebook", None),
])
def test_tensor_round_trip_is_exact_and_picks_the_smallest_form(shape, k, sparsity, per_channel, kind, layout):
    a = clustered_array(shape, k, sparsity, per_channel)
    for entropy in ("huffman", "none"):
        record, segments = _tensors.encode(a, entropy)
        assert record["kind"] == kind and (layout is None or record["layout"] == layout)
        assert sum(map(len, segments)) <= a.nbytes
        assert np.array_equal(_tensors.decode(record, a.shape, segments, entropy), a)
    if per_channel:
        assert record["axis"] == 0


def test_random_weights_stay_raw():
    a = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    record, segments = _tensors.encode(a, "huffman")
    assert record == {"kind": "raw"} and segments == [a.tobytes()]


# --- artifacts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """A 90%-sparse, 16-cluster LeNet-300-100 exported dense and exported + encoded."""
    torch.manual_seed(0)
    task = mlp_task()
    model = cluster.apply(sparsified(LeNet300100(), 0.9), cluster.Config(clusters=16), task).model
    dense = onnx_export.export(model, task, tmp_path_factory.mktemp("dense"))
    folder = tmp_path_factory.mktemp("encoded")
    art = codebook.encode(onnx_export.export(model, task, folder), model, {"entropy": "huffman"})
    return task, model, dense, art


def test_artifact_stores_graph_and_weights_and_decodes_exactly(encoded):
    import onnx

    task, model, dense, art = encoded
    assert sorted(art.manifest["files"]) == [codebook.GRAPH, codebook.WEIGHTS]
    assert sorted(p.name for p in art.folder.iterdir()) == [codebook.GRAPH, "manifest.json", codebook.WEIGHTS]
    assert art.manifest["encoding"] == "codebook"
    assert art.size_bytes < 0.06 * dense.size_bytes  # 90% zeros, 4-bit values: about 1/20 of fp32
    loaded = artifact.load(art.folder)
    rebuilt = onnx.load(str(loaded.runnable_path()))
    original = onnx.load(str(dense.path))
    want = {t.name: onnx.numpy_helper.to_array(t) for t in original.graph.initializer}
    got = {t.name: onnx.numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
    assert want.keys() == got.keys() and all(np.array_equal(want[n], got[n]) for n in want)
    x = task.example_inputs(8)
    out = open_session(loaded).run(x)[0]
    assert np.array_equal(out, open_session(dense).run(x)[0])


def test_bits_per_weight_are_reported_per_layer(encoded):
    _, model, _, art = encoded
    layers = art.manifest["codebook"]["layers"]
    assert set(layers) == {"net.1.weight", "net.3.weight", "net.5.weight"}
    fc1 = layers["net.1.weight"]
    assert fc1["clusters"] <= 16 and fc1["layout"] == "sparse" and abs(fc1["sparsity"] - 0.9) < 0.01
    assert fc1["bits_per_weight"] == pytest.approx(8 * fc1["bytes"] / fc1["weights"], rel=1e-3)
    assert 0.5 < fc1["bits_per_weight"] < 1.5  # ~4-bit values and ~5-bit positions on one weight in ten
    f = art.manifest["facts"]  # what the pipeline merges into result.json
    assert f["storage_encoding"] == "codebook" and f["storage_entropy"] == "huffman"
    assert f["storage_layers"] == layers and f["storage_bytes"] == art.size_bytes
    assert f["storage_bits_per_weight"] < 2


@pytest.mark.parametrize("entropy", ["zstd", "none"])
def test_other_entropy_coders_decode_to_the_same_weights_and_huffman_is_smallest(encoded, entropy, tmp_path):
    import onnx

    task, model, dense, art = encoded
    other = codebook.encode(onnx_export.export(model, task, tmp_path), copy.deepcopy(model), {"entropy": entropy})
    assert other.manifest["codebook"]["weights_bytes"] > art.manifest["codebook"]["weights_bytes"]
    a = onnx.load(str(other.runnable_path()))
    b = onnx.load(str(art.runnable_path()))
    assert {t.name: t.raw_data for t in a.graph.initializer} == {t.name: t.raw_data for t in b.graph.initializer}


@pytest.mark.parametrize("format", ["torch", "openvino"])
def test_non_onnx_artifacts_are_left_as_exported(encoded, tmp_path, format):
    from modelpress import registry

    if format == "openvino":
        pytest.importorskip("openvino")
    task, model, _, _ = encoded
    model = copy.deepcopy(model)
    art = registry.module("export format", format).export(model, task, tmp_path)
    before = {p.name: p.read_bytes() for p in art.folder.iterdir() if p.name != "manifest.json"}
    stored = codebook.encode(art, model, {})
    assert stored.format == art.format and stored.path == art.path and stored.manifest["files"] == art.manifest["files"]
    assert {p.name: p.read_bytes() for p in art.folder.iterdir() if p.name != "manifest.json"} == before
    assert "encoding" not in stored.manifest and stored.size_bytes == art.size_bytes  # every file still counts
    assert "stored as exported" in stored.manifest["facts"]["storage_note"]


# --- damaged files ---------------------------------------------------------------------------------


def damaged_copy(art, tmp_path, change):
    import shutil

    folder = tmp_path / "art"
    shutil.copytree(art.folder, folder)
    path = folder / codebook.WEIGHTS
    path.write_bytes(change(path.read_bytes()))
    return artifact.load(folder, verify=False)


def reheader(data: bytes, edit) -> bytes:
    """Rewrite the header and fix the checksum, as a buggy or hostile writer would."""
    body = data[37:]
    (n,) = struct.unpack_from("<I", body)
    header = json.loads(zlib.decompress(body[4:4 + n]))
    edit(header)
    head = zlib.compress(json.dumps(header).encode())
    body = struct.pack("<I", len(head)) + head + body[4 + n:]
    import hashlib
    return data[:5] + hashlib.sha256(body).digest() + body


def _set_k(h):
    h["tensors"][0]["k"] = 300


def _set_shape(h):
    h["tensors"][0]["shape"] = [3, 4]


def _set_entropy(h):
    h["entropy"] = "gzip"


@pytest.mark.parametrize("change, message", [
    (lambda d: d[:-100], "does not match its SHA-256 checksum"),
    (lambda d: d[:300] + bytes([d[300] ^ 0xFF]) + d[301:], "does not match its SHA-256 checksum"),
    (lambda d: b"PK\x03\x04" + d[4:], "does not start with the codebook file marker"),
    (lambda d: reheader(d, _set_k), "field 'k' is 300"),
    (lambda d: reheader(d, _set_shape), "corrupted"),
    (lambda d: reheader(d, _set_entropy), "valid 'entropy'"),
])
def test_damaged_codebook_file_is_a_clear_error(encoded, tmp_path, change, message):
    art = damaged_copy(encoded[3], tmp_path, change)
    with pytest.raises(ModelFileError, match=f"codebook weights file .*{message}"):
        art.runnable_path()


def test_damaged_file_is_caught_by_the_manifest_and_a_swapped_graph_is_named(encoded, tmp_path):
    art = damaged_copy(encoded[3], tmp_path, lambda d: d[:-1])
    with pytest.raises(ModelFileError, match="does not match the hash in its manifest"):
        artifact.load(art.folder)
    graph = art.folder / codebook.GRAPH
    graph.write_bytes(graph.read_bytes() + b"\x00")
    (art.folder / codebook.WEIGHTS).write_bytes((encoded[3].folder / codebook.WEIGHTS).read_bytes())
    with pytest.raises(ModelFileError, match="graph.onnx does not match the graph its weights file was written for"):
        art.runnable_path()
