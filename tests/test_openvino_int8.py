"""OpenVINO int8 (NNCF): the model type chosen for the model, weight-only int8, and the fidelity check that
catches a collapsed int8 IR before it is written (issues #17, #18)."""
import copy

import numpy as np
import pytest

from modelpress.config import parse
from modelpress.errors import ConfigError, ModelpressError
from modelpress.runtime import RuntimeConfig, open_session

pytest.importorskip("openvino")
pytest.importorskip("nncf")
torch = pytest.importorskip("torch")

from modelpress.export import openvino as ovx  # noqa: E402


@pytest.fixture(scope="module")
def transformer():
    from modelpress.task import load_task

    task = load_task("digits:transformer")
    return task, task.build_model()


class ScoresAttention(torch.nn.Module):
    """Attention written out (no num_heads attribute, no nn.MultiheadAttention): only the graph shows it."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, dim=-1)
        return self.head((scores @ v).mean(1))


class SoftmaxClassifier(torch.nn.Module):
    """A Softmax over a weight MatMul (a classifier's probabilities) is not attention."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return torch.softmax(self.fc(x.flatten(1)), dim=-1)


def small_task():
    from tests.test_contracts import small_task

    return small_task((8, 8))


def test_auto_picks_transformer_for_attention_and_default_for_a_cnn(transformer, digits_task, digits_model):
    task, model = transformer
    mha = torch.nn.Sequential(torch.nn.Linear(8, 8))
    mha.add_module("attn", torch.nn.MultiheadAttention(8, 2))
    assert "nn.MultiheadAttention" in ovx.attention_in_model(mha)
    assert "num_heads=4" in ovx.attention_in_model(model)
    assert ovx.attention_in_model(digits_model) is None

    config = ovx.Config(int8=True)
    ir = ovx.convert(model, task, config)[0]
    assert ovx.attention_in_graph(ir) is not None
    kind, why = ovx.choose_model_type(model, ir, config)
    assert kind == "transformer" and "num_heads" in why
    cnn_ir = ovx.convert(digits_model, digits_task, config)[0]
    assert ovx.attention_in_graph(cnn_ir) is None
    kind, why = ovx.choose_model_type(digits_model, cnn_ir, config)
    assert kind == "default" and "no attention" in why
    # graph only: written-out attention is found from its Softmax over q @ k; a classifier's Softmax is not
    small = small_task()
    for module, found in ((ScoresAttention(), True), (SoftmaxClassifier(), False)):
        assert ovx.attention_in_model(module) is None
        graph = ovx.convert(module.eval(), small, config)[0]
        assert (ovx.attention_in_graph(graph) is not None) == found
        assert ovx.choose_model_type(module, graph, config)[0] == ("transformer" if found else "default")
    # explicit choices win; the old key smooth_quant: true still means NNCF's transformer type
    assert ovx.choose_model_type(model, ir, ovx.Config(int8=True, model_type="default"))[0] == "default"
    assert ovx.choose_model_type(digits_model, cnn_ir, ovx.Config(int8=True, smooth_quant=True)) == \
        ("transformer", "smooth_quant: true in the export options")


def test_int8_export_records_the_model_type_and_its_check(transformer, tmp_path):
    task, model = transformer
    art = ovx.export(model, task, tmp_path, ovx.Config(int8=True))
    fact = art.manifest["facts"]["openvino_int8"]
    assert fact["mode"] == "quantize" and fact["model_type"] == "transformer" and "num_heads" in fact["why"]
    assert fact["smooth_quant"] is True and "retried" not in fact
    check = fact["fidelity_check"]
    assert check["split"] == "validation" and check["worst"] >= 0.9
    assert check["samples"] == sum(len(y) for _, y in list(task.val_data)[:4])  # fidelity_batches: 4
    assert check["measure"] == "top-1 agreement where the fp32 IR decides"
    assert 10 <= check["decided"] <= check["samples"]


def weight_sources(ir):
    """Per MatMul/Convolution with a constant second input: the element type of the Constant it comes from."""
    out = {}
    for op in ir.get_ordered_ops():
        if op.get_type_name() not in ("MatMul", "Convolution"):
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            out[op.get_friendly_name()] = str(node.get_element_type())
    return out


def test_weight_only_int8_stores_int8_weights_and_keeps_fidelity(transformer, tmp_path):
    import openvino as ov

    task, model = transformer
    ovx.export(model, task, tmp_path / "fp32", ovx.Config())
    art = ovx.export(model, task, tmp_path / "w8", ovx.Config(int8="weights"))
    assert art.manifest["precision"] == "int8-weights"
    fact = art.manifest["facts"]["openvino_int8"]
    assert fact["mode"] == "weights" and fact["fidelity_check"]["worst"] >= 0.95
    sources = weight_sources(ov.Core().read_model(str(tmp_path / "w8" / "model.xml")))
    assert len(sources) >= 12 and set(sources.values()) <= {"<Type: 'uint8_t'>", "<Type: 'int8_t'>"}, sources
    assert set(weight_sources(ov.Core().read_model(str(tmp_path / "fp32" / "model.xml"))).values()) == \
        {"<Type: 'float32'>"}
    bins = [(tmp_path / d / "model.bin").stat().st_size for d in ("fp32", "w8")]
    assert bins[1] < 0.35 * bins[0]
    session = open_session(art, RuntimeConfig(backend="openvino", precision="int8"))
    x = task.example_inputs(8)
    assert session.run(x)[0].shape == (8, 10)


def destroying(models_for=("default", "transformer")):
    """A stand-in for NNCF quantize that returns the IR of the model with its weights scrambled, for the model
    types listed (the others get the fp32 IR unchanged), and records the model types it was called with."""
    calls = []

    def quantize(ov_model, task, config, model_type="default", ignored=()):
        calls.append(model_type)
        if model_type not in models_for:
            return ov_model
        model = copy.deepcopy(quantize.model)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * p.std().clamp_min(0.1))
        return ovx.convert(model, task, ovx.Config())[0]

    quantize.calls = calls
    return quantize


def test_a_collapse_fails_naming_cause_and_fix(transformer, tmp_path, monkeypatch):
    task, model = transformer
    fake = destroying()
    fake.model = model
    monkeypatch.setattr(ovx, "quantize", fake)
    # auto: transformer, then default; both collapse: the error says what it measured, the cause and the fix
    with pytest.raises(ModelpressError, match=r"model_type \w+\) collapsed the outputs: its output 'logits' "
                                              r"has top-1 agreement where the fp32 IR decides 0\.\d+ .* validation "
                                              r"samples, \d+ of them decided \(below 0\.8\) "
                                              r"\(model_type \w+ did no better\)"
                                              r"\. Likely cause: .*Fix: export option int8: weights") as e:
        ovx.export(model, task, tmp_path / "a", ovx.Config(int8=True))
    assert fake.calls == ["transformer", "default"] and not (tmp_path / "a" / "model.xml").exists()
    assert "model_type: transformer" not in str(e.value)  # already tried: not offered as the fix
    # an explicit model type is not retried; the message offers the transformer type
    fake.calls.clear()
    with pytest.raises(ModelpressError, match=r"model_type default\) collapsed the outputs: [^()]*\(below 0\.8\)\. "
                                              r".*Fix: export option int8: weights.*model_type: transformer"):
        ovx.export(model, task, tmp_path / "b", ovx.Config(int8=True, model_type="default"))
    assert fake.calls == ["default"]
    # on_collapse: keep writes the IR, with the message as a note (the run's notes show it)
    art = ovx.export(model, task, tmp_path / "c", ovx.Config(int8=True, on_collapse="keep"))
    assert "int8: weights" in art.manifest["facts"]["openvino_int8_note"]
    assert art.manifest["facts"]["openvino_int8"]["fidelity_check"]["worst"] < 0.8


def test_auto_retries_a_collapsed_model_type_with_the_other(digits_task, digits_model, transformer, tmp_path,
                                                             monkeypatch):
    task, model = transformer
    fake = destroying(models_for=("transformer",))
    fake.model = model
    monkeypatch.setattr(ovx, "quantize", fake)
    fact = ovx.export(model, task, tmp_path / "t", ovx.Config(int8=True)).manifest["facts"]["openvino_int8"]
    assert fake.calls == ["transformer", "default"] and fact["model_type"] == "default"
    assert "retried as default after transformer collapsed" in fact["why"] and fact["smooth_quant"] is False
    # smooth_quant: true asks for the transformer type: no retry with the default type
    fake.calls.clear()
    with pytest.raises(ModelpressError, match="collapsed"):
        ovx.export(model, task, tmp_path / "sq", ovx.Config(int8=True, smooth_quant=True))
    assert fake.calls == ["transformer"]

    fake = destroying(models_for=("default",))
    fake.model = digits_model
    monkeypatch.setattr(ovx, "quantize", fake)
    art = ovx.export(digits_model, digits_task, tmp_path / "cnn", ovx.Config(int8=True))
    fact = art.manifest["facts"]["openvino_int8"]
    assert fake.calls == ["default", "transformer"]
    assert fact["model_type"] == "transformer" and "retried as transformer" in fact["why"]
    assert fact["retried"].startswith("model_type default collapsed") and fact["fidelity_check"]["worst"] >= 0.99
    # fidelity_batches: 0 skips the check (and with it the retry)
    fake.calls.clear()
    art = ovx.export(digits_model, digits_task, tmp_path / "unchecked", ovx.Config(int8=True, fidelity_batches=0))
    assert fake.calls == ["default"] and "fidelity_check" not in art.manifest["facts"]["openvino_int8"]


def test_options_are_checked():
    parsed = parse(ovx.Config, {"int8": "weights"}, "export.options")
    assert parsed.int8 == "weights"
    assert parse(ovx.Config, {"int8": True}, "export.options").int8 is True
    with pytest.raises(ConfigError, match=r"export.options.int8' must be one of False, True, 'weights', got 'weight'"):
        parse(ovx.Config, {"int8": "weight"}, "export.options")
    with pytest.raises(ConfigError, match=r"int8: weights compresses the weights only.*model_type: transformer"):
        parse(ovx.Config, {"int8": "weights", "model_type": "transformer"}, "export.options")
    with pytest.raises(ConfigError, match=r"smooth_quant applies to NNCF's transformer model type only"):
        parse(ovx.Config, {"int8": True, "smooth_quant": True, "model_type": "default"}, "export.options")
    with pytest.raises(ConfigError, match=r"model_type' must be one of 'auto', 'transformer', 'default'"):
        parse(ovx.Config, {"model_type": "bert"}, "export.options")
    with pytest.raises(ConfigError, match=r"fidelity_batches must be at least 0"):
        parse(ovx.Config, {"fidelity_batches": -1}, "export.options")
    with pytest.raises(ConfigError, match=r"keep_float names layers NNCF's int8 quantization leaves in float"):
        parse(ovx.Config, {"keep_float": ["fc"]}, "export.options")
    with pytest.raises(ConfigError, match=r"int8: weights compresses the weights only.*keep_float"):
        parse(ovx.Config, {"int8": "weights", "keep_float": ["fc"]}, "export.options")


def test_keep_float_leaves_the_named_layers_out_of_int8(transformer, tmp_path):
    """NNCF's ignored scope from module-name patterns: the named layers keep float inputs (no FakeQuantize in
    front of their MatMul), every other weighted layer is quantized; a pattern matching nothing is refused with
    the layers there are."""
    import openvino as ov

    task, model = transformer
    kept = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    art = ovx.export(model, task, tmp_path / "kept", ovx.Config(int8=True, keep_float=(kept,)))
    assert art.manifest["facts"]["openvino_int8"]["kept_float"] == [kept]
    ir = ov.Core().read_model(str(art.path))
    quantized = {}
    for op in ir.get_ordered_ops():
        if op.get_type_name() == "MatMul":
            sources = {op.input_value(i).get_node().get_type_name() for i in range(2)}
            quantized[op.get_friendly_name()] = "FakeQuantize" in sources or "Convert" in sources
    ours = {name: q for name, q in quantized.items() if name.startswith(f"/{kept.replace('.', '/')}/")}
    assert ours and not any(ours.values())  # the kept layer: float inputs and weights
    assert sum(quantized.values()) >= 2  # the others: int8
    with pytest.raises(ModelpressError, match=r"keep_float pattern 'no.such.\*' matches no layer.*Its layers: "):
        ovx.export(model, task, tmp_path / "bad", ovx.Config(int8=True, keep_float=("no.such.*",)))
    # through a run: the fp32 baseline export drops int8 and keep_float together (export.fp32_config)
    from modelpress.pipeline import run
    from modelpress.recipe import parse_recipe
    from tests.conftest import fast

    recipe = fast(parse_recipe({"task": "digits:transformer", "export": {"format": "openvino", "options": {
        "int8": True, "keep_float": [kept]}}, "runtime": {"backend": "openvino", "precision": "int8"}}))
    assert run(recipe, tmp_path / "run").facts["openvino_int8"]["kept_float"] == [kept]


def test_recipe_int8_weights_runs_through_the_pipeline(tmp_path):
    from modelpress.pipeline import run
    from modelpress.recipe import parse_recipe
    from tests.conftest import fast

    recipe = fast(parse_recipe({"task": "digits", "export": {"format": "openvino", "options": {"int8": "weights"}},
                                "runtime": {"backend": "openvino", "precision": "int8"}}))
    result = run(recipe, tmp_path / "run")
    assert result.facts["openvino_int8"]["mode"] == "weights"
    assert result.fidelity["logits"]["agreement"] >= 0.99 and result.size_bytes < 0.5 * result.baseline_size_bytes
    assert np.isfinite(result.score)


def test_a_collapse_of_a_model_without_attention_names_a_cause_it_has():
    seen = {"output": "logits", "measure": "top-1 agreement", "worst": 0.73, "samples": 64}
    cnn = ovx.collapse_message("quantize", "default", seen, 0.8, ["default", "transformer"], attention=False)
    assert "depthwise" in cnn and "attention" not in cnn.split("Likely cause")[1].split("Fix")[0]
    bert = ovx.collapse_message("quantize", "default", seen, 0.8, ["default"], attention=True)
    assert "attention's products" in bert
