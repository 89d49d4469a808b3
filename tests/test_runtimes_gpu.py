"""GPU runtimes (ONNX Runtime CUDA and TensorRT providers, PyTorch CUDA): parity with the CPU torch model.

Every test skips, with the runtime's own reason, where no NVIDIA GPU and GPU build are installed.
"""
import pytest

from modelpress import registry
from modelpress.evaluate import compare, predict_fn, torch_predict
from modelpress.runtime import RuntimeConfig, open_session

pytestmark = pytest.mark.gpu

CASES = [("onnxruntime_cuda", "onnx", "fp32"), ("tensorrt", "onnx", "fp32"), ("tensorrt", "onnx", "fp16"),
         ("torch_cuda", "torch", "fp32"), ("torch_cuda", "torch", "fp16"), ("torch_cuda", "torch", "bf16")]


@pytest.mark.parametrize("backend, fmt, precision", CASES)
def test_gpu_parity(backend, fmt, precision, tmp_path, digits_task, digits_model):
    runtime = registry.module("runtime", backend)
    if not runtime.available():
        pytest.skip(runtime.why_unavailable())
    art = registry.module("export format", fmt).export(digits_model, digits_task, tmp_path)
    session = open_session(art, RuntimeConfig(backend=backend, device="cuda", precision=precision))
    p = compare(torch_predict(digits_model, digits_task), predict_fn(session), digits_task.test_data,
                digits_task.output_kinds, digits_task.output_names)["logits"]
    assert p["agreement"] >= 0.99
    if precision == "fp32":
        assert p["max_abs_diff"] <= 1e-3
    else:
        assert p["cosine"] >= 0.999


def test_nvml_energy_is_measured_on_a_gpu(tmp_path, digits_task, digits_model):
    from modelpress.energy import EnergyMeter

    runtime = registry.module("runtime", "onnxruntime_cuda")
    if not runtime.available():
        pytest.skip(runtime.why_unavailable())
    meter = EnergyMeter("cuda")
    if not meter.available:
        pytest.skip(meter.why)
    art = registry.module("export format", "onnx").export(digits_model, digits_task, tmp_path)
    session = open_session(art, RuntimeConfig(backend="onnxruntime_cuda", device="cuda"))
    joules = meter.measure(lambda: session.run(digits_task.example_inputs(256)), 50)
    assert joules is None or 0 < joules < 100  # a real reading, per batch of 256
