"""Every CPU deployment runtime that is installed: export, load, parity with the torch model.

Each optional runtime's tests skip (with the reason) when its extra is not installed; CI installs all.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelpress import registry
from modelpress.evaluate import compare, predict_fn, torch_predict
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.runtime.executorch import split

CPU_TARGETS = ("openvino", "tflite", "executorch")  # export format == runtime name


def needs(name):
    mod = registry.module("runtime", name)
    if not mod.available():
        pytest.skip(mod.why_unavailable())


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, digits_task, digits_model):
    """fp32 artifacts of the digits CNN for each installed CPU target (exported once for the module;
    two small compiled batch sizes for the fixed-batch targets keep the export short)."""
    out = {}
    for name in CPU_TARGETS:
        if registry.module("runtime", name).available():
            exporter = registry.module("export format", name)
            options = {} if name == "openvino" else {"batch_sizes": (1, 8)}
            out[name] = exporter.export(digits_model, digits_task, tmp_path_factory.mktemp(name),
                                        exporter.Config(**options))
    return out


@pytest.mark.parametrize("name", CPU_TARGETS)
def test_fp32_parity_on_evaluation_data(name, artifacts, digits_task, digits_model):
    needs(name)
    session = open_session(artifacts[name], RuntimeConfig(backend=name, threads=1))
    p = compare(torch_predict(digits_model, digits_task), predict_fn(session), digits_task.test_data,
                digits_task.output_kinds, digits_task.output_names)["logits"]
    assert p["max_abs_diff"] <= 1e-3 and p["agreement"] >= 0.99 and p["samples"] >= 64


@pytest.mark.parametrize("name", CPU_TARGETS)
@pytest.mark.parametrize("batch", [1, 3, 8, 45])
def test_any_batch_size_matches_torch(name, batch, artifacts, digits_task, digits_model):
    needs(name)
    session = open_session(artifacts[name], RuntimeConfig(backend=name, threads=1))
    x = digits_task.example_inputs(batch)
    out = session.run(x)
    assert len(out) == 1 and out[0].shape == (batch, 10) and out[0].dtype == np.float32
    assert np.abs(out[0] - torch_predict(digits_model, digits_task)(x)[0]).max() <= 1e-3


@pytest.mark.parametrize("name", CPU_TARGETS)
def test_wrong_shape_and_dtype_at_predict_time(name, artifacts):
    needs(name)
    session = open_session(artifacts[name], RuntimeConfig(backend=name, threads=1))
    with pytest.raises(Exception, match=r"shape \[2, 1, 9, 8\].*expects \['batch', 1, 8, 8\]"):
        session.run({"x": np.zeros((2, 1, 9, 8), np.float32)})
    with pytest.raises(Exception, match="dtype float64"):
        session.run({"x": np.zeros((2, 1, 8, 8), np.float64)})


def test_fixed_batch_artifacts_record_their_sizes(artifacts):
    for name in ("tflite", "executorch"):
        if name in artifacts:
            assert artifacts[name].manifest["methods"] == {"1": "batch_1", "8": "batch_8"}
            assert registry.module("export format", name).Config().batch_sizes == (1, 32)
    if "openvino" in artifacts:  # the IR keeps ONNX's dynamic batch axis and its weights file
        assert sorted(artifacts["openvino"].manifest["files"]) == ["model.bin", "model.xml"]


def test_openvino_precision_hint(artifacts, digits_task, digits_model):
    needs("openvino")
    import openvino as ov

    from modelpress.errors import RuntimeUnavailable

    ref = torch_predict(digits_model, digits_task)(digits_task.example_inputs(32))[0]
    f32 = open_session(artifacts["openvino"], RuntimeConfig(backend="openvino", precision="fp32"))
    assert f32.precision.endswith("f32") or "float32" in f32.precision
    d32 = np.abs(f32.run(digits_task.example_inputs(32))[0] - ref).max()
    assert d32 <= 1e-4  # fp32 really fp32
    bf16_config = RuntimeConfig(backend="openvino", precision="bf16")
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        # the plugin would silently compute in f32: the hint is refused, with the reason, instead
        with pytest.raises(RuntimeUnavailable, match="cannot compute in bf16 on this CPU.*Use precision fp32"):
            open_session(artifacts["openvino"], bf16_config)
        return
    bf16 = open_session(artifacts["openvino"], bf16_config)
    d16 = np.abs(bf16.run(digits_task.example_inputs(32))[0] - ref).max()
    assert d32 <= 1e-4 < d16  # bf16 is really a lower precision, fp32 really fp32


@pytest.mark.parametrize("name", CPU_TARGETS)
def test_transformer_int8_agrees_with_fp32(name, tmp_path):
    """The small transformer (attention, layer norm, GELU) in int8 on each target, on random data."""
    needs(name)
    import torch

    from modelpress.zoo import TinyTransformer
    from tests.test_contracts import small_task

    torch.manual_seed(0)
    model, task = TinyTransformer().eval(), small_task((8, 8))
    exporter = registry.module("export format", name)
    options = {"int8": True} if name == "openvino" else {"int8": True, "batch_sizes": (16,)}
    art = exporter.export(model, task, tmp_path, exporter.Config(**options))
    assert art.manifest["precision"] == "int8"
    session = open_session(art, RuntimeConfig(backend=name, precision="int8"))
    p = compare(torch_predict(model, task), predict_fn(session), task.test_data, task.output_kinds,
                task.output_names)["logits"]
    assert p["agreement"] >= 0.9 and p["cosine"] >= 0.99


def test_openvino_int8_on_digits_is_smaller_and_agrees(tmp_path, digits_task, digits_model, artifacts):
    needs("openvino")
    from modelpress.export import openvino

    art = openvino.export(digits_model, digits_task, tmp_path, openvino.Config(int8=True))
    session = open_session(art, RuntimeConfig(backend="openvino"))
    p = compare(torch_predict(digits_model, digits_task), predict_fn(session), digits_task.test_data,
                digits_task.output_kinds, digits_task.output_names)["logits"]
    assert p["agreement"] >= 0.99 and art.size_bytes < 0.4 * artifacts["openvino"].size_bytes


def test_openvino_torch_export_route(tmp_path, digits_task, digits_model):
    needs("openvino")
    from modelpress.export import openvino

    art = openvino.export(digits_model, digits_task, tmp_path, openvino.Config(source="torch_export"))
    assert art.manifest["source"] == "torch_export"
    session = open_session(art, RuntimeConfig(backend="openvino"))
    assert session.input_names == ("x",)
    x = digits_task.example_inputs(5)
    assert np.abs(session.run(x)[0] - torch_predict(digits_model, digits_task)(x)[0]).max() <= 1e-3


@given(st.integers(1, 300), st.lists(st.integers(1, 64), min_size=1, max_size=4, unique=True))
def test_split_covers_every_sample_once(n, sizes):
    chunks = split(n, sorted(sizes))
    assert sum(take for take, _ in chunks) == n
    assert all(size in sizes and 1 <= take <= size for take, size in chunks)
    assert all(take == size for take, size in chunks[:-1])  # only the last piece is ever padded


SMALL = ("lenet5", "resnet", "depthwise", "transformer")


@pytest.mark.parametrize("model_name", SMALL)
@pytest.mark.parametrize("name", sorted(registry.RUNTIMES))
def test_every_runtime_runs_every_small_model(name, model_name, tmp_path):
    """The contract over the registry: each available runtime exports (with the first format it runs) and
    runs the four contract models (plain CNN, residual adds, depthwise convolutions, attention) with fp32
    parity. One compiled batch size keeps the fixed-batch targets quick."""
    import dataclasses

    import torch

    from tests.test_contracts import SMALL_MODELS, small_task

    needs(name)
    build, shape = SMALL_MODELS[model_name]
    torch.manual_seed(0)
    model, task = build().eval(), small_task(shape)
    fmt = registry.module("runtime", name).FORMATS[0]
    exporter = registry.module("export format", fmt)
    fields = {f.name for f in dataclasses.fields(exporter.Config)}
    art = exporter.export(model, task, tmp_path, exporter.Config(**({"batch_sizes": (16,)} if "batch_sizes" in fields else {})))
    session = open_session(art, RuntimeConfig(backend=name, threads=1))
    p = compare(torch_predict(model, task), predict_fn(session), task.test_data,
                task.output_kinds, task.output_names)["logits"]
    assert p["max_abs_diff"] <= 1e-3 and p["agreement"] >= 0.99
