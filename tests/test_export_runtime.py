import numpy as np
import onnx
import pytest

from modelpress import artifact
from modelpress.errors import ModelFileError, ModelpressError
from modelpress.evaluate import compare, predict_fn, torch_predict
from modelpress.export import onnx as onnx_export
from modelpress.export import torch as torch_export
from modelpress.runtime import RuntimeConfig, open_session


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory, digits_task, digits_model):
    return onnx_export.export(digits_model, digits_task, tmp_path_factory.mktemp("onnx"))


def test_onnx_is_one_checked_file_with_dynamic_batch(onnx_artifact):
    assert sorted(p.name for p in onnx_artifact.folder.iterdir()) == ["manifest.json", "model.onnx"]
    proto = onnx.load(str(onnx_artifact.path))
    onnx.checker.check_model(proto)
    assert all(not t.HasField("data_location") or t.data_location == 0 for t in proto.graph.initializer)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    assert onnx_artifact.size_bytes == onnx_artifact.path.stat().st_size


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_onnxruntime_matches_torch(onnx_artifact, digits_task, digits_model, batch):
    session = open_session(onnx_artifact, RuntimeConfig(threads=1))
    x = digits_task.example_inputs(batch)
    out = session.run(x)[0]
    ref = torch_predict(digits_model, digits_task)(x)[0]
    assert out.shape == (batch, 10)
    assert np.abs(out - ref).max() <= 1e-4


def test_parity_on_test_data(onnx_artifact, digits_task, digits_model):
    p = compare(torch_predict(digits_model, digits_task), predict_fn(open_session(onnx_artifact)),
                digits_task.test_data, digits_task.output_kinds, digits_task.output_names)["logits"]
    assert p["max_abs_diff"] <= 1e-4 and p["agreement"] == 1.0 and p["samples"] >= 64


def test_torch_export_runs_on_torch_runtime(tmp_path, digits_task, digits_model):
    art = torch_export.export(digits_model, digits_task, tmp_path)
    session = open_session(artifact.load(tmp_path), RuntimeConfig(backend="torch", threads=1))
    x = digits_task.example_inputs(5)
    assert np.abs(session.run(x)[0] - torch_predict(digits_model, digits_task)(x)[0]).max() <= 1e-5
    assert art.format == "torch"


def test_wrong_input_shape_and_dtype_are_named(onnx_artifact):
    session = open_session(onnx_artifact)
    with pytest.raises(ModelpressError, match="shape"):
        session.run({"x": np.zeros((1, 1, 9, 8), np.float32)})
    with pytest.raises(ModelpressError, match="dtype"):
        session.run({"x": np.zeros((1, 1, 8, 8), np.float64)})
    with pytest.raises(ModelpressError, match="Missing model input"):
        session.run({"y": np.zeros((1, 1, 8, 8), np.float32)})


def test_runtime_refuses_other_formats(onnx_artifact):
    with pytest.raises(ModelpressError, match="runs torch artifacts"):
        open_session(onnx_artifact, RuntimeConfig(backend="torch"))


def test_truncated_and_corrupted_onnx(tmp_path, onnx_artifact):
    data = onnx_artifact.path.read_bytes()
    for name, payload in [("truncated", data[: len(data) // 2]), ("random", np.random.default_rng(0).bytes(4096))]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(payload)
        with pytest.raises(ModelFileError, match="not a valid ONNX model|truncated"):
            onnx_export.check_model(folder / "model.onnx")
        # the manifest hash catches the change even before ONNX is parsed
        (folder / "manifest.json").write_text((onnx_artifact.folder / "manifest.json").read_text())
        with pytest.raises(ModelFileError, match="does not match the hash"):
            artifact.load(folder)


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelFileError, match="no manifest.json"):
        artifact.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="damaged"):
        artifact.load(tmp_path)


def test_spinning_threads_give_the_same_outputs_and_only_onnxruntime_has_the_switch(onnx_artifact, digits_task):
    from modelpress.errors import ConfigError
    from modelpress.recipe import parse_recipe

    x = digits_task.example_inputs(4)
    quiet = open_session(onnx_artifact, RuntimeConfig(threads=2)).run(x)
    spinning = open_session(onnx_artifact, RuntimeConfig(threads=2, spinning=True)).run(x)
    np.testing.assert_array_equal(quiet[0], spinning[0])
    assert parse_recipe({"task": "digits", "runtime": {"spinning": True}}).runtime.spinning
    with pytest.raises(ConfigError, match="spinning is an ONNX Runtime setting"):
        parse_recipe({"task": "digits", "export": {"format": "openvino"}, "runtime": {"backend": "openvino", "spinning": True}})


@pytest.mark.parametrize("batch", [1, 2, 7, 32])
def test_streams_split_the_batch_and_give_the_same_outputs(onnx_artifact, digits_task, batch):
    from modelpress.runtime._streams import BatchStreams

    x = digits_task.example_inputs(batch)
    one = open_session(onnx_artifact, RuntimeConfig(threads=2)).run(x)
    streams = open_session(onnx_artifact, RuntimeConfig(threads=4, streams=2))
    assert isinstance(streams, BatchStreams) and len(streams.sessions) == 2
    out = streams.run(x)
    assert out[0].shape == one[0].shape
    np.testing.assert_allclose(out[0], one[0], rtol=1e-5, atol=1e-5)


def test_streams_run_parts_on_separate_sessions_and_refuse_outputs_without_a_batch_axis():
    from modelpress.runtime._streams import BatchStreams

    class Recorder:
        input_names = ("x",)

        def __init__(self, reduce: bool = False):
            self.seen, self.reduce = [], reduce

        def run(self, inputs):
            self.seen.append(len(inputs["x"]))
            return [inputs["x"].sum(0) if self.reduce else inputs["x"] * 2]

    a, b, c = Recorder(), Recorder(), Recorder()
    out = BatchStreams([a, b, c]).run({"x": np.arange(8.0)})
    np.testing.assert_array_equal(out[0], np.arange(8.0) * 2)
    assert (a.seen, b.seen, c.seen) == ([3], [2], [3])
    with pytest.raises(ModelpressError, match="do not carry the batch on axis 0.*streams: 1"):
        BatchStreams([Recorder(True), Recorder(True)]).run({"x": np.ones((4, 3))})


def test_streams_settings_are_checked():
    from modelpress.errors import ConfigError
    from modelpress.recipe import parse_recipe

    assert parse_recipe({"task": "digits", "runtime": {"threads": 2, "streams": 2}}).runtime.streams == 2
    with pytest.raises(ConfigError, match="streams must be at least 1"):
        RuntimeConfig(streams=0)
    with pytest.raises(ConfigError, match=r"threads \(3\) must be a multiple of streams \(2\)"):
        RuntimeConfig(threads=3, streams=2)
    with pytest.raises(ConfigError, match="streams is supported on the onnxruntime runtime"):
        parse_recipe({"task": "digits", "export": {"format": "openvino"}, "runtime": {"backend": "openvino", "streams": 2}})
