"""Label-free recovery: a task's augmented inputs come from its calibration data alone and are seeded,
``distill data: augmented`` trains on the number of inputs asked for, and the recovery facts measure what
distilling from the unpruned model won back on validation data.

Training runs use one thread (small models; the machine is busy)."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from modelpress.compress import Applied, distill
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.task import AUGMENT_CHUNK, Batches, Task, calibration_first

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, MEAN, STD = 32, (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)


def test_calibration_inputs_come_first_then_chunks_of_augmented_ones():
    calib = {"x": np.arange(5, dtype=np.float32)[:, None]}
    calls = []

    def more(n, chunk):
        calls.append((n, chunk))
        return {"x": np.full((n, 1), 100 + chunk, np.float32)}

    made = calibration_first(calib, 5 + AUGMENT_CHUNK + 3, more, batch_size=8)
    x = made.arrays["x"][:, 0]
    assert made.targets is None and made.batch_size == 8 and len(x) == 5 + AUGMENT_CHUNK + 3
    assert x[:5].tolist() == [0, 1, 2, 3, 4] and set(x[5:5 + AUGMENT_CHUNK]) == {100} and set(x[-3:]) == {101}
    assert calls == [(AUGMENT_CHUNK, 0), (3, 1)]
    assert calibration_first(calib, 2, more, 8).arrays["x"][:, 0].tolist() == [0, 1]  # fewer: no augmentation
    with pytest.raises(ConfigError, match="at least 1"):
        calibration_first(calib, 0, more, 8)


def test_augmented_photos_come_from_the_calibration_photos_only_and_are_seeded(monkeypatch):
    pytest.importorskip("skimage", reason="the photos need pip install 'modelpress[reference]'")
    from modelpress.tasks import photos
    from modelpress.tasks._image_task import augmented_photos

    calib = photos.to_input(photos.views("calibration", SIZE)[0], MEAN, STD)
    make = augmented_photos(calib, SIZE, MEAN, STD, batch_size=16)
    read, original = [], photos.photo
    monkeypatch.setattr(photos, "photo", lambda name: read.append(name) or original(name))
    count = len(calib) + AUGMENT_CHUNK + 40  # two chunks of augmented photos
    x = make(count, 1).arrays["pixel_values"]
    assert set(read) == set(photos.SPLITS["calibration"])  # every calibration photo is drawn from, no other
    assert x.shape == (count, 3, SIZE, SIZE) and x.dtype == np.float32
    assert np.array_equal(x[:len(calib)], calib)  # the calibration inputs themselves first
    low, high = (0 - np.array(MEAN)) / np.array(STD), (1 - np.array(MEAN)) / np.array(STD)  # normalised like them
    assert ((x >= low[:, None, None] - 1e-5) & (x <= high[:, None, None] + 1e-5)).all()
    assert len({v.tobytes() for v in x[len(calib):]}) == count - len(calib)
    assert np.array_equal(x, make(count, 1).arrays["pixel_values"])  # the same seed, the same inputs
    assert not np.array_equal(x[len(calib):], make(count, 2).arrays["pixel_values"][len(calib):])


def test_text_variants_use_only_the_words_of_the_calibration_texts():
    from modelpress.tasks.hf_text import text_variants

    texts = ["the cat sat on the mat today", "a very good movie", "dog"]
    variants = text_variants(texts, 200, seed=0)
    assert variants == text_variants(texts, 200, seed=0) and variants != text_variants(texts, 200, seed=1)

    def in_order(words, sentence):  # words is a subsequence of the sentence's words
        it = iter(sentence.split())
        return all(w in it for w in words)

    assert all(v and any(in_order(v.split(), t) for t in texts) for v in variants)
    assert len(set(variants)) > 20  # crops and dropped words, not only the texts themselves


def test_text_task_gives_calibration_texts_then_their_crops(tmp_path):
    pytest.importorskip("transformers")
    from modelpress.tasks.hf_text import task as hf_task

    from .test_hf_task import TEXTS, save_bert

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS))
    task = hf_task(save_bert(tmp_path / "enc", head=False), tmp_path / "texts.txt", max_length=12)
    made = task.unlabelled(30, 0)
    calib = task.calib_data.arrays
    assert made.num_samples == 30 and made.targets is None
    for name in ("input_ids", "attention_mask"):
        assert np.array_equal(made.arrays[name][:len(calib[name])], calib[name])
    calib_tokens = set(np.unique(calib["input_ids"]))
    assert set(np.unique(made.arrays["input_ids"])) <= calib_tokens  # no word outside the calibration texts


def test_augmented_data_needs_a_task_that_can_make_it():
    x = np.zeros((16, 4), np.float32)
    task = Task(name="plain", build_model=lambda: None, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x}), val_data=Batches({"x": x}, np.zeros(16, np.int64)),
                test_data=Batches({"x": x}, np.zeros(16, np.int64)), num_classes=4)
    with pytest.raises(ConfigError, match="task 'plain' has none. Use data: calib"):
        distill.apply(torch.nn.Linear(4, 4), distill.Config(data="augmented", labels=False), task)
    with pytest.raises(ConfigError, match="samples must be at least 1"):
        parse(distill.Config, {"data": "augmented", "samples": 0}, "distill")


def damaged(model):
    """The digits CNN with noise on every weight: its accuracy falls well below the unpruned model's."""
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(p.std() * torch.randn_like(p))
    return model


def test_label_free_distillation_trains_on_the_count_asked_and_regains_the_lost_score(digits_task, digits_model,
                                                                                     monkeypatch):
    broken = damaged(digits_model)
    asked, seen = [], []
    task = dataclasses.replace(digits_task, train_data=None,  # no labels anywhere
                               unlabelled=lambda n, seed: asked.append((n, seed)) or digits_task.unlabelled(n, seed))
    real_fit = distill.fit

    def fit(model, data, *args, **kwargs):
        seen.append(sum(len(next(iter(b.values()))) if isinstance(b, dict) else -1 for b in data))
        return real_fit(model, data, *args, **kwargs)

    monkeypatch.setattr(distill, "fit", fit)
    config = parse(distill.Config, {"data": "augmented", "labels": False, "samples": 700, "epochs": 2, "seed": 3,
                                    "threads": 1}, "distill")
    out = distill.apply(Applied.of(broken), config, task)
    assert asked == [(700, 3)] and seen == [700]  # one epoch's batches: 700 unlabelled inputs
    rec = out.facts["recovery"]
    assert rec["on"] == "validation" and rec["inputs"] == 700 and rec["epochs"] == 2 and rec["data"] == "augmented"
    assert rec["labels"] is False and rec["samples"] == digits_task.val_data.num_samples
    assert rec["score_teacher"] - rec["score_before"] > 0.1  # the damage is real
    assert rec["score_after"] > rec["score_before"] and rec["regained"] >= 0.5  # and distilling wins most of it back
    val = digits_task.val_data
    from modelpress.evaluate import evaluate, torch_predict
    assert rec["score_after"] == pytest.approx(evaluate(torch_predict(out.model, task), task, val), abs=1e-6)
    assert rec["score_before"] == pytest.approx(evaluate(torch_predict(broken, task), task, val), abs=1e-6)

    class Result:
        facts = out.facts

    [line] = distill.explain(Result)
    assert line.startswith(f"distill regained {rec['regained']:.0%}") and "700 unlabelled augmented inputs" in line
