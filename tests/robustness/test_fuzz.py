"""Property-based fuzzing of recipe and config parsing: every rejection is a clear ConfigError or
ModelFileError, never a traceback of another kind; recipes as raw bytes, manifests and .npz files are
refused without reaching outside their folder or allocating what a header promises. Together these run
over 5,000 cases."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress import registry
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.recipe import KEYS, Recipe, parse_recipe

SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
SECTION_KEYS = {"export": ["format", "options"], "runtime": ["backend", "device", "threads", "precision"],
                "constraints": ["max_score_drop", "max_latency_ms", "max_size_bytes", "max_energy_j"],
                "bench": ["batch_sizes", "warmup", "rounds", "runs_per_round"]}
WORDS = ["digits", "onnx", "torch", "onnxruntime", "cpu", "cuda", "fp32", *registry.TECHNIQUES, *registry.RUNTIMES]


def section(name: str):
    keys = st.sampled_from(SECTION_KEYS[name]) | st.text(max_size=8)
    vals = st.one_of(values, st.sampled_from(WORDS), st.integers(0, 64), st.lists(st.integers(0, 64), max_size=3))
    return st.dictionaries(keys, vals, max_size=4)


steps = st.lists(st.one_of(st.sampled_from(WORDS), st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6),
                                                                    st.one_of(values, st.dictionaries(st.text(max_size=8), values, max_size=3)),
                                                                    max_size=2), values), max_size=3)
recipes = st.fixed_dictionaries({}, optional={
    "task": st.one_of(st.sampled_from(["digits", "fashion-mnist:lenet5"]), values),
    "steps": st.one_of(steps, values), "export": st.one_of(section("export"), values),
    "runtime": st.one_of(section("runtime"), values), "constraints": st.one_of(section("constraints"), values),
    "bench": st.one_of(section("bench"), values), "search": st.one_of(st.none(), values),
    "extra": values})


@SETTINGS
@given(recipes)
def test_recipe_parsing_accepts_or_rejects_clearly(data):
    try:
        recipe = parse_recipe(data)
    except ConfigError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert isinstance(recipe, Recipe)
    assert set(data) <= set(KEYS)
    assert parse_recipe(yaml.safe_load(recipe.to_yaml())).to_yaml() == recipe.to_yaml()


@SETTINGS
@given(st.one_of(values, st.text(max_size=200)))
def test_arbitrary_yaml_documents(data):
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    try:
        parse_recipe(doc)
    except ConfigError as e:
        assert str(e)


TECHNIQUES = sorted(registry.TECHNIQUES)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TECHNIQUES or ["none"]), st.dictionaries(st.text(max_size=10), values, max_size=4),
       st.data())
def test_technique_configs_accept_or_reject_clearly(name, junk, data):
    if name == "none":
        return
    import dataclasses

    cls = registry.module("technique", name).Config
    fields = [f.name for f in dataclasses.fields(cls)]
    settings_ = dict(junk)
    for field in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
        settings_[field] = data.draw(st.one_of(values, st.integers(-3, 300), st.floats(-2, 2), st.sampled_from(WORDS)))
    try:
        parse(cls, settings_, name)
    except ConfigError as e:
        assert str(e)


# ---- recipes as raw bytes, artifact manifests and .npz files (issue #23) --------------------------------

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VALID = (b"task: digits\nsteps:\n  - quantize: {mode: dynamic}\nexport: {format: onnx}\n"
         b"runtime: {backend: onnxruntime, threads: 2}\nconstraints: {max_score_drop: 0.01}\n"
         b"bench: {batch_sizes: [1, 32], warmup: 5}\nsearch: {trials: 3, space: {quantize: {bits: [4, 8]}}}\n")
TOKENS = [b"task:", b" digits", b"&a", b" *a", b"[", b"]", b"{", b"}", b": ", b"- ", b"\n", b"  ", b",",
          b"!!python/object/apply:os.system", b"!!binary", b"<<: *a", b"'", b'"', b"\xff", b"\xc3", b"\x00",
          b"bench", b"batch_sizes", b"1e999", b".nan", b"-.inf", b"99999999999999999999999", b"threads",
          b"steps", b"quantize", b"constraints", b"max_score_drop", b"&b [*a, *a, *a, *a]", b"? ", b"%YAML 1.1",
          b"---", b"...", b"#", b"|", b">", b"\t", b"\r", b"\xef\xbb\xbf", b"2001-13-99", b"0x", b"0o9"]


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for pos, cut, insert in edits:
        pos %= len(data) + 1
        data = data[:pos] + insert + data[pos + cut:]
    return data


raw_recipes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
    st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 8), st.sampled_from(TOKENS) | st.binary(max_size=4)),
             min_size=1, max_size=6).map(lambda edits: _mutate(VALID, edits)),
)


@settings(FAST, max_examples=1500)
@given(raw_recipes)
def test_recipes_as_raw_bytes(tmp_path, data):
    from modelpress.errors import ModelFileError
    from modelpress.recipe import load_recipe

    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        recipe = load_recipe(path)
    except (ConfigError, ModelFileError) as e:
        assert str(e) and len(str(e)) < 2000
        return
    assert isinstance(recipe, Recipe)


HOSTILE_NAMES = ["model.onnx", "../sentinel.bin", "../../sentinel.bin", "/tmp/../sentinel.bin", "sub/../../sentinel.bin",
                 "./model.onnx", "model.onnx/", "", ".", "..", "link.bin", "manifest.json", ".modelpress-output",
                 "extra.bin", "a\\b", "a\x00b", "dir/x.bin"]


@pytest.fixture(scope="module")
def manifest_arena(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    (root / "sentinel.bin").write_bytes(b"outside the artifact")
    return root


@settings(FAST, max_examples=900)
@given(data=st.data())
def test_manifests_never_reach_outside_their_folder(manifest_arena, data):
    import json
    import shutil

    from modelpress import artifact
    from modelpress.errors import ModelFileError

    folder = manifest_arena / "art"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"model bytes")
    if data.draw(st.booleans()):
        (folder / "extra.bin").write_bytes(b"unlisted")
    if data.draw(st.booleans()):
        (folder / "link.bin").symlink_to(manifest_arena / "sentinel.bin")
    digests = {"model.onnx": artifact.sha256(folder / "model.onnx"),
               "sentinel": artifact.sha256(manifest_arena / "sentinel.bin")}
    names = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=12)
    digest = st.sampled_from([*digests.values(), "0" * 64, "xyz"]) | st.integers() | st.none()
    shape = st.lists(st.sampled_from(["batch", 1, 8, -1, 2**40, None, "x", 1.5]), max_size=4)
    spec = st.dictionaries(st.text(max_size=4), st.fixed_dictionaries(
        {"shape": shape | values, "dtype": st.sampled_from(["float32", "int64", "object", "<U3", "bogus"]) | values}),
        max_size=2)
    manifest = data.draw(st.fixed_dictionaries({}, optional={
        "format": st.sampled_from(["onnx", "torch"]) | values, "file": names | values,
        "files": st.dictionaries(names, digest, max_size=3) | values,
        "support_files": st.dictionaries(names, digest, max_size=2) | values,
        "inputs": spec | values, "outputs": st.lists(st.text(max_size=4), max_size=2) | values}))
    text = json.dumps(manifest) if data.draw(st.integers(0, 9)) else data.draw(st.text(max_size=50))
    (folder / "manifest.json").write_text(text)
    try:
        art = artifact.load(folder)
    except ModelFileError as e:
        assert str(e)
        return
    base = folder.resolve()
    for name in {**art.manifest["files"], **art.manifest.get("support_files", {})}:
        path = folder / name
        assert base in path.resolve().parents and not path.is_symlink() and path.is_file()
    assert art.path.resolve().parent == base and art.size_bytes == len(b"model bytes")


npy_shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple) | st.sampled_from([(10**12,), (2**62, 4), (-1,)])
npy_dtypes = st.sampled_from(["<f4", "<f8", "<i8", "|u1", "|b1", "|O", "<U3", "|V0", "<c8", ">f4"])


def _npy(shape, dtype, fill: int, cut: int | None) -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    import struct

    body = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes([fill]) * 256
    return body if cut is None else body[:cut]


member_names = st.sampled_from(["x", "x.npy", "y.npy", "../x.npy", "x/"]) | st.text(min_size=1, max_size=5).filter(
    lambda n: "\x00" not in n)  # zipfile itself cuts a name at NUL
npz_members = st.lists(st.tuples(member_names,
                                 st.one_of(st.builds(_npy, npy_shapes, npy_dtypes, st.integers(0, 255),
                                                     st.none() | st.integers(0, 400)),
                                           st.binary(max_size=64))), max_size=3)


@settings(FAST, max_examples=900)
@given(npz_members, st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=2), st.booleans())
def test_npz_files_are_read_safely_or_refused(tmp_path, members, flips, real):
    import io
    import zipfile

    import numpy as np

    from modelpress.errors import ModelpressError
    from modelpress.predict import read_inputs

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if real:
            z.writestr("x.npy", _real_x())
        for name, payload in members:
            z.writestr(name, payload)
    data = bytearray(buf.getvalue())
    for pos, bit in flips:
        if data:
            data[pos % len(data)] ^= bit
    path = tmp_path / "in.npz"
    path.write_bytes(bytes(data))
    spec = {"x": {"shape": ["batch", 1, 8, 8], "dtype": "float32"}}
    try:
        arrays = read_inputs(path, spec)
    except ModelpressError as e:
        assert str(e)
        return
    assert list(arrays) == ["x"] and arrays["x"].dtype == np.float32 and arrays["x"].shape[1:] == (1, 8, 8)
    assert np.isfinite(arrays["x"]).all()


def _real_x() -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 1, 8, 8), np.float32))
    return buf.getvalue()
