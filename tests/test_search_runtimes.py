"""Runtime and precision as a search dimension (``modelpress.search.runtimes``): the deploy runtime first,
then the installed CPU runtimes; a pinned list as written; OpenVINO bf16 only on a CPU with bf16
instructions; and latency read against fp32 on the deploy runtime. No trial runs here."""
import dataclasses

import optuna
import pytest

from modelpress import doctor, registry
from modelpress.constraints import Quantities
from modelpress.config import to_dict
from modelpress.errors import ConfigError
from modelpress.recipe import parse_recipe
from modelpress.result import Result
from modelpress.search import runtimes
from modelpress.search.space import Candidate, resolve
from modelpress.search.summary import markdown, summarize

from . import test_search_fakes as fakes


@pytest.fixture(autouse=True)
def fake_techniques(monkeypatch):
    fakes.register(monkeypatch)


def cpu(monkeypatch, *flags):
    """This CPU as /proc/cpuinfo would describe it with only ``flags``."""
    monkeypatch.setattr(doctor, "cpu_info", lambda: {"model": "test", "cores": 2,
                                                     "flags": {f: f in flags for f in doctor.FLAGS}})


def installed(monkeypatch, *missing):
    """Every runtime and exporter package found, except the modules whose PACKAGE is in ``missing``."""
    monkeypatch.setattr(runtimes, "_installed", lambda mod: getattr(mod, "PACKAGE", None) not in missing)


def space_of(runtime=None, space_runtime=None):
    data = {"task": "digits", "search": {"space": {"techniques": ["shrink"], "max_steps": 1,
                                                   **({"runtime": space_runtime} if space_runtime else {})}}}
    if runtime:
        data["runtime"] = runtime
    r = parse_recipe(data)
    return resolve(r.search, r), r


def test_the_default_space_is_the_deploy_runtime_then_every_installed_cpu_runtime(monkeypatch):
    cpu(monkeypatch, "avx2")
    installed(monkeypatch, "ai_edge_litert.interpreter")  # LiteRT's runtime is missing
    space, _ = space_of()
    cpu_runtimes = [n for n in registry.RUNTIMES if not hasattr(registry.module("runtime", n), "DEVICE")]
    assert space.backends() == ["onnxruntime", "executorch", "openvino"]  # deploy first, then the registry's order
    assert "torch" in cpu_runtimes and "torch" not in space.backends()  # the source framework is not a deploy runtime
    assert all(r["precision"] == "fp32" and r["threads"] == 2 for r in space.runtimes)
    assert space.export["openvino"] == {"format": "openvino", "options": {}}
    assert any("'tflite' left out" in n and "ai-edge-litert" in n for n in space.notes)
    assert space.size() == (1 + 3) * 3  # fp32 and shrink's three ratios, on each runtime

    space, _ = space_of(runtime={"backend": "openvino"})
    assert space.backends() == ["openvino", "onnxruntime", "executorch"]
    assert space.baseline().runtime["backend"] == "openvino"  # the fp32 seed and the defaults deploy where the recipe does
    assert {c.runtime["backend"] for _, c in space.defaults()} == {"openvino"}


def test_a_runtime_without_an_installed_exporter_is_left_out(monkeypatch):
    cpu(monkeypatch)
    installed(monkeypatch, "executorch.exir")  # the ExecuTorch runtime is there, its exporter is not
    space, _ = space_of()
    assert "executorch" not in space.backends() and "tflite" in space.backends()
    assert any("'executorch' left out" in n and "exporter" in n for n in space.notes)


def test_a_gpu_deployment_searches_no_cpu_runtime(monkeypatch):
    installed(monkeypatch)
    space, _ = space_of(runtime={"backend": "tensorrt"})
    assert space.backends() == ["tensorrt"] and any("GPU" in n for n in space.notes)


def test_a_pinned_backend_list_is_respected(monkeypatch):
    cpu(monkeypatch, "avx512_bf16")
    installed(monkeypatch)
    space, r = space_of(space_runtime={"backend": ["onnxruntime"]})
    assert space.runtimes == (to_dict(r.runtime),)  # the recipe's runtime alone: the behaviour before
    assert not space.notes and space.size() == 4
    # listed values are crossed as written (no precision added), the recipe's runtime stays the deploy one
    space, _ = space_of(space_runtime={"backend": ["openvino", "onnxruntime"], "threads": [1, 2]})
    assert [(s["backend"], s["threads"]) for s in space.runtimes] == [
        ("onnxruntime", 1), ("onnxruntime", 2), ("openvino", 1), ("openvino", 2)]
    assert {s["precision"] for s in space.runtimes} == {"fp32"}


def test_bf16_is_left_out_on_a_cpu_without_bf16_instructions(monkeypatch):
    installed(monkeypatch)
    cpu(monkeypatch, "avx2", "avx512f", "avx512_vnni")  # int8 dot products, no bf16
    space, _ = space_of()
    assert [s["precision"] for s in space.runtimes if s["backend"] == "openvino"] == ["fp32"]
    (note,) = [n for n in space.notes if "bf16" in n]
    assert "avx512_bf16" in note and "amx_bf16" in note

    cpu(monkeypatch, "avx512_bf16")
    space, _ = space_of()
    openvino = [s for s in space.runtimes if s["backend"] == "openvino"]
    assert [s["precision"] for s in openvino] == ["fp32", "bf16"]
    assert {s["precision"] for s in space.runtimes if s["backend"] != "openvino"} == {"fp32"}  # nowhere else
    assert [space.runtime_key(s) for s in openvino] == ["openvino precision=fp32", "openvino precision=bf16"]
    assert space.runtime_key(space.runtimes[0]) == "onnxruntime"
    assert space.baseline("openvino precision=bf16").label() == "fp32 on openvino (bf16)"
    assert not any("bf16" in n for n in space.notes)


def test_a_listed_precision_applies_to_the_runtimes_that_compute_in_it(monkeypatch):
    cpu(monkeypatch)
    installed(monkeypatch)
    space, _ = space_of(space_runtime={"precision": ["fp32", "auto"], "streams": [1, 2]})
    assert [s["precision"] for s in space.runtimes if s["backend"] == "openvino"] == ["fp32", "auto"]
    assert {s["precision"] for s in space.runtimes if s["backend"] != "openvino"} == {"fp32"}
    # streams only where the runtime runs them; the combinations RuntimeConfig refuses are noted, not kept
    assert {s["backend"] for s in space.runtimes if s["streams"] == 2} == {"onnxruntime"}
    assert any("streams" in n and "openvino" in n for n in space.notes)


def test_every_runtime_setting_is_drawn_and_its_params_draw_it_again(monkeypatch):
    cpu(monkeypatch, "amx_bf16")
    installed(monkeypatch)
    space, _ = space_of()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(80):
        cand = space.sample(study.ask())
        seen.add(space.runtime_key(cand.runtime))
        assert space.sample(optuna.trial.FixedTrial(space.params_of(cand))) == cand
        assert space.params_of(Candidate.from_json(cand.to_json())) == space.params_of(cand)  # as stored in the study
    assert seen == {space.runtime_key(s) for s in space.runtimes}
    assert space.params_of(Candidate((("shrink", {"rank_ratio": 0.5}),), {"format": "onnx"},
                                     {**space.runtimes[0], "threads": 7})) is None  # a setting the space lacks


def record(number, runtime, ratio, label):
    cand = Candidate((("shrink", {"rank_ratio": 0.5}),) if number else (), {"format": "x"}, runtime)
    names = {f.name for f in dataclasses.fields(Result)}  # a result.json with only what the summary reads measured
    result = {**dict.fromkeys(names), "facts": {}, "notes": [], "violations": [], "size_bytes": 100 - number,
              "latency_ratio": {"1": ratio, "32": ratio}}
    return {"number": number, "state": "complete", "label": label, "candidate": cand.to_json(), "recipe": {},
            "objectives": {"latency": ratio, "size": 100.0 - number}, "outcome": {"result": result},
            "values": Quantities(score_drop=0.0, latency_ms_batch1=1.0, size_bytes=100 - number, energy_j=None),
            "seed": None, "cached": False, "run": 1}


def test_latency_is_read_against_fp32_on_the_deploy_runtime(monkeypatch):
    cpu(monkeypatch, "avx512_bf16")
    installed(monkeypatch)
    space, r = space_of()
    deploy, bf16 = space.runtimes[0], space.baseline("openvino precision=bf16").runtime
    tflite = space.baseline("tflite").runtime
    refs = {"onnxruntime": {"1": 0.2, "32": 4.0}, "openvino precision=bf16": {"1": 0.1, "32": 1.0}}
    records = [record(0, deploy, 1.0, "fp32 on onnxruntime"), record(1, deploy, 0.8, "shrink on onnxruntime"),
               record(2, bf16, 0.5, "shrink on openvino (bf16)"), record(3, tflite, 0.9, "shrink on tflite")]
    extra = {"latency_batch_size": 32, "reference_ms": refs}
    summary = summarize(records, r, r.search, space, extra)
    vs = {row["trial"]: row["latency_vs_deploy"] for row in summary["trials"]}
    assert vs[1] == {"1": 0.8, "32": 0.8}  # on the deploy runtime: the paired ratio itself
    assert vs[2] == {"1": pytest.approx(0.25), "32": pytest.approx(0.125)}  # 0.5 x 1.0 ms / 4.0 ms at batch 32
    assert vs[3] is None  # no fp32 reference on tflite yet
    assert summary["deploy_runtime"] == "onnxruntime"
    text = markdown(summary)
    assert "× fp32 on onnxruntime @32" in text and "| 0.125 |" in text
    assert summary["chosen"]["latency_vs_deploy"] == vs[summary["chosen"]["trial"]]


def test_an_openvino_int8_deployment_is_not_timed_again_under_the_same_hint(monkeypatch):
    cpu(monkeypatch, "amx_bf16")
    installed(monkeypatch)
    space, _ = space_of(runtime={"backend": "openvino", "precision": "int8"})
    assert [s["precision"] for s in space.runtimes if s["backend"] == "openvino"] == ["int8", "bf16"]  # fp32: int8's hint


def test_listed_settings_no_added_runtime_accepts_leave_it_out_but_the_deploy_one_must_accept_them(monkeypatch):
    cpu(monkeypatch)
    installed(monkeypatch)
    space, _ = space_of(space_runtime={"streams": [2]})
    assert space.backends() == ["onnxruntime"] and all(s["streams"] == 2 for s in space.runtimes)
    with pytest.raises(ConfigError, match="no valid setting of the recipe's runtime openvino"):
        space_of(runtime={"backend": "openvino"}, space_runtime={"streams": [2]})
