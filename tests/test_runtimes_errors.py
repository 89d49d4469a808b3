"""Bad input for the deployment runtimes: a runtime not installed, an op a target cannot convert, damaged
files; and the energy meters' arithmetic on fake counters."""
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from modelpress import registry
from modelpress.artifact import Artifact
from modelpress.energy import EnergyMeter
from modelpress.errors import ModelFileError, ModelpressError, RuntimeUnavailable
from modelpress.runtime import RuntimeConfig, open_session

# what to hide from sys.modules to make each optional runtime look uninstalled, and its extra
HIDE = {"openvino": (["openvino"], "openvino"),
        "tflite": (["ai_edge_litert", "ai_edge_litert.interpreter", "litert_torch"], "tflite"),
        "executorch": (["executorch", "executorch.runtime", "executorch.exir"], "executorch")}


@pytest.mark.parametrize("name", sorted(HIDE))
def test_missing_runtime_names_the_extra(name, monkeypatch, tmp_path, digits_task, digits_model):
    modules, extra = HIDE[name]
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # 'import m' now raises ImportError
    runtime = registry.module("runtime", name)
    assert runtime.available() is False and f"modelpress[{extra}]" in runtime.why_unavailable()
    fake = Artifact(tmp_path, {"format": name, "file": "m", "files": {}, "inputs": {}})
    with pytest.raises(RuntimeUnavailable, match=rf"modelpress\[{extra}\]"):
        open_session(fake, RuntimeConfig(backend=name))
    with pytest.raises(RuntimeUnavailable, match=rf"modelpress\[{extra}\]"):
        registry.module("export format", name).export(digits_model, digits_task, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("name", ["onnxruntime_cuda", "tensorrt", "torch_cuda"])
def test_gpu_runtimes_say_why_they_are_unavailable(name, tmp_path):
    runtime = registry.module("runtime", name)
    if runtime.available():
        pytest.skip("a GPU is present: tests/test_runtimes_gpu.py covers this runtime")
    reason = runtime.why_unavailable()
    assert "modelpress[gpu]" in reason or "GPU" in reason or "CUDA" in reason
    fmt = runtime.FORMATS[0]
    with pytest.raises(RuntimeUnavailable, match="not usable here"):
        open_session(Artifact(tmp_path, {"format": fmt, "file": "m", "files": {}}), RuntimeConfig(backend=name))


class Inverse(nn.Module):
    """An op no deployment target converts: a matrix inverse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[:, 0, :4, :4] + 4 * torch.eye(4)).reshape(-1, 16)


class WithInverse(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Identity(), Inverse())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.mark.parametrize("name", ["openvino", "tflite", "executorch"])
def test_unconvertible_op_names_op_layer_and_another_target(name, tmp_path, digits_task):
    if not registry.module("runtime", name).available():
        pytest.skip(registry.module("runtime", name).why_unavailable())
    exporter = registry.module("export format", name)
    options = {} if name == "openvino" else {"batch_sizes": (2,)}
    with pytest.raises(ModelpressError) as err:
        exporter.export(WithInverse().eval(), digits_task, tmp_path / "out", exporter.Config(**options))
    message = str(err.value)
    assert "linalg_inv" in message and "layer 'body.1' (Inverse)" in message and "choose another target" in message
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("name, file", [("openvino", "model.xml"), ("tflite", "model.tflite"),
                                        ("executorch", "model.pte")])
def test_damaged_model_files_are_refused_clearly(name, file, tmp_path):
    if not registry.module("runtime", name).available():
        pytest.skip(registry.module("runtime", name).why_unavailable())
    (tmp_path / file).write_bytes(np.random.default_rng(0).bytes(4096))
    manifest = {"format": name, "file": file, "files": {}, "methods": {"1": "batch_1"},
                "inputs": {"x": {"shape": ["batch", 1, 8, 8], "dtype": "float32"}}}
    with pytest.raises(ModelFileError, match="re-export"):
        registry.module("runtime", name).load(Artifact(tmp_path, manifest), RuntimeConfig(backend=name))


def test_export_config_ranges_are_checked():
    from modelpress.config import parse
    from modelpress.errors import ConfigError

    for name in ("tflite", "executorch"):
        cls = registry.module("export format", name).Config
        with pytest.raises(ConfigError, match="batch_sizes"):
            parse(cls, {"batch_sizes": [1, 1]}, "export.options")
        with pytest.raises(ConfigError, match="batch_sizes"):
            parse(cls, {"batch_sizes": [0]}, "export.options")
    with pytest.raises(ConfigError, match="Did you mean 'int8'"):
        parse(registry.module("export format", "openvino").Config, {"int9": True}, "export.options")


# ---- energy meters ----------------------------------------------------------------------------------

def test_rapl_meter_counts_packages_only(tmp_path, monkeypatch):
    pkg, sub = tmp_path / "intel-rapl:0", tmp_path / "intel-rapl:0:0"
    pkg.mkdir()
    sub.mkdir()
    (pkg / "energy_uj").write_text("1000000")
    (sub / "energy_uj").write_text("5")  # a sub-domain of package 0: part of its count, not added again
    monkeypatch.setattr(EnergyMeter, "ROOT", tmp_path)
    meter = EnergyMeter("cpu")
    assert meter.kind == "RAPL"

    def work():  # each call uses 2500 microjoules
        (pkg / "energy_uj").write_text(str(int((pkg / "energy_uj").read_text()) + 2500))

    assert meter.measure(work, 40) == pytest.approx(0.0025)


def test_nvml_meter_reads_millijoules_and_runs_long_enough(monkeypatch):
    state = {"mj": 10_000}
    fake = types.SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
                                 nvmlDeviceGetTotalEnergyConsumption=lambda h: state["mj"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = EnergyMeter("cuda")
    assert meter.kind == "NVML" and meter.available

    def work():
        state["mj"] += 30  # 0.03 J per call

    assert meter.measure(work, 5, min_seconds=0.05) == pytest.approx(0.03)


def test_nvml_without_pynvml_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = EnergyMeter("cuda")
    assert not meter.available and meter.measure(lambda: None, 3) is None
    assert "nvidia-ml-py" in meter.why
