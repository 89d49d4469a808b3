import gzip

import numpy as np
import pytest

from modelpress.errors import ConfigError, ModelpressError
from modelpress.evaluate import compare, evaluate, torch_predict
from modelpress.task import Batches, accuracy, load_task
from modelpress.tasks import fashion_mnist


def test_batches_cover_every_sample_once():
    b = Batches({"x": np.arange(10)[:, None]}, np.arange(10), batch_size=3, shuffle=True, seed=1)
    seen = np.concatenate([t for _, t in b])
    assert sorted(seen) == list(range(10)) and len(b) == 4
    again = np.concatenate([t for _, t in b])
    assert sorted(again) == list(range(10)) and not np.array_equal(seen, again)  # new shuffle each epoch


def test_batches_reject_mismatched_lengths():
    with pytest.raises(ModelpressError, match="different lengths"):
        Batches({"x": np.zeros(3)}, np.zeros(4))


def test_digits_reaches_097(digits_task, digits_model):
    assert evaluate(torch_predict(digits_model, digits_task), digits_task, digits_task.test_data) >= 0.97
    assert evaluate(torch_predict(digits_model, digits_task), digits_task, digits_task.val_data) >= 0.97
    assert digits_task.example_inputs(5)["x"].shape == (5, 1, 8, 8)


def test_reference_models_train_the_same_whatever_the_caller_did(tmp_path, monkeypatch):
    # a fresh cache trains again: same weights, bit for bit, whatever torch's random state and thread count
    import torch

    states, before = [], torch.get_num_threads()
    try:
        for run, threads in enumerate((1, 2)):
            monkeypatch.setenv("MODELPRESS_CACHE", str(tmp_path / f"cache{run}"))
            torch.manual_seed(run)
            torch.set_num_threads(threads)
            states.append(load_task("digits").build_model().state_dict())
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_accuracy_credits_tied_top_scores_evenly_whatever_the_label_order():
    """Logits rounded to a coarse grid (an int8 output) tie; argmax would give every tie to class 0."""
    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(400, 4)) * 2) / 2  # steps of 0.5: many ties
    labels = rng.integers(0, 4, 400)
    data = Batches({"x": logits}, labels, batch_size=64)
    tied = (logits == logits.max(1, keepdims=True)).sum(1)
    assert (tied > 1).sum() > 40
    score = accuracy(lambda b: [b["x"]], data)
    order = [3, 1, 0, 2]  # the same model with its classes numbered differently
    renamed = Batches({"x": logits[:, order]}, np.argsort(order)[labels], batch_size=64)
    assert score == pytest.approx(accuracy(lambda b: [b["x"]], renamed), abs=1e-12)
    argmax = float((logits.argmax(1) == labels).mean())
    renamed_argmax = float((logits[:, order].argmax(1) == np.argsort(order)[labels]).mean())
    assert argmax != renamed_argmax  # the rule this replaces depends on the numbering
    expected = np.mean([(logits[i, labels[i]] == logits[i].max()) / tied[i] for i in range(400)])
    assert score == pytest.approx(expected)
    assert accuracy(lambda b: [np.zeros((len(b["x"]), 4))], data) == pytest.approx(0.25)  # all tied: chance
    nan = accuracy(lambda b: [np.full((len(b["x"]), 4), np.nan)], data)
    assert nan == 0.0
    agreement = compare(lambda b: [b["x"] + np.arange(4) * 1e-3], lambda b: [b["x"]], data.inputs_only(),
                        ("logits",), ("logits",))["logits"]["agreement"]
    assert 0.5 < agreement < 1.0  # the candidate's ties count 1/k against the reference's strict order


def test_output_kinds_name_one_kind_per_output():
    from modelpress.task import Task

    data = Batches({"x": np.zeros((4, 2), np.float32)}, np.zeros(4, np.int64))
    common = dict(name="t", build_model=lambda: None, input_names=("x",), calib_data=data, val_data=data,
                  test_data=data)
    assert Task(output_names=("logits",), **common).output_kinds == ("logits",)  # the default
    both = Task(output_names=("a", "b"), output_kinds=("embeddings",), **common)
    assert both.output_kinds == ("embeddings", "embeddings")  # one kind given for every output
    with pytest.raises(ConfigError, match="output_kinds must give one of logits, embeddings, values per output"):
        Task(output_names=("a",), output_kinds=("probabilities",), **common)
    with pytest.raises(ConfigError, match="2 outputs: a, b"):
        Task(output_names=("a", "b"), output_kinds=("logits", "values", "values"), **common)


def test_unknown_task_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'digits'"):
        load_task("digit")


def test_user_task_import_string(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    task = load_task("my_task:task")
    assert task.name == "my-task" and task.val_data.num_samples > 0 and task.test_data.num_samples > 0
    sys.modules.pop("my_task", None)
    with pytest.raises(ConfigError, match="Cannot load the task"):
        load_task("no_such_module_xyz:task")


def test_idx_reader(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in data.shape) + data.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(fashion_mnist.read_idx(tmp_path / "a.gz"), data)
    (tmp_path / "b").write_bytes(raw[:-5])
    with pytest.raises(ModelpressError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"garbage!")
    with pytest.raises(ModelpressError, match="magic"):
        fashion_mnist.read_idx(tmp_path / "c")


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPRESS_FASHION_MNIST", str(tmp_path))
    fashion_mnist.load.cache_clear()
    try:
        with pytest.raises(ModelpressError, match="apt-get install dataset-fashion-mnist"):
            fashion_mnist.load("test")
    finally:
        fashion_mnist.load.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("name, floor", [("fashion-mnist:lenet5", 0.90), ("fashion-mnist:lenet-300-100", 0.88),
                                         ("fashion-mnist:transformer", 0.88)])
def test_fashion_mnist_reference_models(name, floor):
    task = load_task(name)
    # validation and test together hold at least the 10,000 held-out images, none of them empty
    assert task.val_data.num_samples > 0 and task.test_data.num_samples > 0
    assert task.val_data.num_samples + task.test_data.num_samples >= 10000
    model = task.build_model()
    assert evaluate(torch_predict(model, task), task, task.test_data) >= floor
    assert evaluate(torch_predict(model, task), task, task.val_data) >= floor
