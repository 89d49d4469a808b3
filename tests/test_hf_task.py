"""Real-model tasks: a local Hugging Face text model folder and an image classifier over a folder of images.

The models are small randomly initialised Hugging Face configs saved locally (no hub access); the
images are scikit-image's bundled photos when scikit-image is installed, else generated pictures.
"""
import numpy as np
import pytest

from modelpress.errors import ConfigError, ModelFileError, ModelpressError
from modelpress.evaluate import compare, evaluate, predict_fn, torch_predict
from modelpress.runtime import open_session
from modelpress.task import split_slices

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

WORDS = "the a cat dog sat on mat runs fast slow good bad movie film was is very not and".split()
TEXTS = ["the cat sat on the mat", "a very good movie", "the film was bad", "dog runs fast", "not a good film",
         "the dog was very slow", "a bad movie and a bad film", "cat and dog", "the movie was good",
         "very very slow", "a cat runs", "the mat was bad"]


def save_bert(folder, head: bool):
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tok = transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                  id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    torch.manual_seed(0)
    model = (transformers.BertForSequenceClassification if head else transformers.BertModel)(cfg).eval()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n\n")
    labels = ["neg", "pos", "neg", "1", "neg", "neg", "neg", "1", "pos", "neg", "1", "neg"]
    (root / "labels.txt").write_text("\n".join(labels))
    return {"root": root, "classifier": save_bert(root / "clf", head=True), "encoder": save_bert(root / "enc", head=False),
            "labels": np.array([{"neg": 0, "neu": 1, "pos": 2}.get(v, 1) for v in labels])}


def test_text_classifier_scores_accuracy_and_exports_with_parity(text_files, tmp_path):
    from modelpress.export import onnx as onnx_export
    from modelpress.tasks.hf_text import task as hf_task

    task = hf_task(text_files["classifier"], text_files["root"] / "texts.txt", labels=text_files["root"] / "labels.txt",
                   max_length=12)
    assert task.input_names == ("input_ids", "attention_mask") and task.output_names == ("logits",)
    assert task.example_inputs(2)["input_ids"].shape == (2, 12) and task.num_classes == 3
    model = task.build_model()
    # 12 texts in order: 3 calibrate, then validation and test are held out, scored against the labels' class ids
    calib, val, test = split_slices(12, 64)
    assert calib.stop == val.start == 3 and val.stop == test.start and test.stop == 12 and 3 < val.stop < 12
    for data, part in ((task.val_data, val), (task.test_data, test)):
        held = text_files["labels"][part]
        assert np.array_equal(data.targets, held)
        logits = torch_predict(model, task)(data.arrays)[0]
        expected = float((logits.argmax(1) == held).mean())
        assert evaluate(torch_predict(model, task), task, data) == pytest.approx(expected)
    art = onnx_export.export(model, task, tmp_path / "onnx")
    p = compare(torch_predict(model, task), predict_fn(open_session(art)), task.test_data, task.output_kinds,
                task.output_names)
    assert set(p) == {"logits"} and p["logits"]["kind"] == "logits"
    assert p["logits"]["max_abs_diff"] <= 1e-4 and p["logits"]["agreement"] == 1.0


def test_embeddings_metric_is_cosine_to_fp32(text_files):
    from modelpress.tasks.hf_text import task as hf_task

    task = hf_task(text_files["encoder"], text_files["root"] / "texts.txt", max_length=12)
    assert task.output_names == ("embeddings",) and task.output_kinds == ("embeddings",) and task.train_data is None
    model = task.build_model()
    fp32 = torch_predict(model, task)
    assert evaluate(fp32, task, task.val_data) == pytest.approx(1.0, abs=1e-6)
    assert evaluate(fp32, task, task.test_data) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = evaluate(lambda x: [fp32(x)[0] + rng.standard_normal(fp32(x)[0].shape).astype(np.float32)], task,
                     task.test_data)
    assert 0.0 < noisy < 0.99
    same = compare(fp32, fp32, task.test_data, task.output_kinds, task.output_names)["embeddings"]
    assert same["kind"] == "embeddings" and same["nn_agreement"] == 1.0 and "agreement" not in same


def test_hf_text_on_openvino_through_a_recipe(text_files, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from modelpress.pipeline import run
    from modelpress.recipe import parse_recipe
    from tests.conftest import fast

    monkeypatch.setenv("MODELPRESS_HF_MODEL", str(text_files["classifier"]))
    monkeypatch.setenv("MODELPRESS_HF_TEXTS", str(text_files["root"] / "texts.txt"))
    monkeypatch.setenv("MODELPRESS_HF_MAX_LENGTH", "12")
    recipe = parse_recipe({"task": "hf-text", "export": {"format": "openvino"}, "runtime": {"backend": "openvino"}})
    result = run(fast(recipe), tmp_path / "run")
    # no labels: the metric is cosine similarity to the fp32 logits, so the fp32 baseline scores 1
    assert result.baseline_score == pytest.approx(1.0, abs=1e-6) and result.score >= 0.9999
    assert result.baseline_val_score == pytest.approx(1.0, abs=1e-6) and result.val_score >= 0.9999
    assert result.parity["logits"]["max_abs_diff"] <= 1e-3


def test_text_task_bad_input(text_files, tmp_path, monkeypatch):
    from modelpress.task import load_task
    from modelpress.tasks.hf_text import task as hf_task

    (tmp_path / "three.txt").write_text("neg\npos\nneg\n")
    with pytest.raises(ConfigError, match="12 texts but 3 labels"):
        hf_task(text_files["classifier"], text_files["root"] / "texts.txt", labels=tmp_path / "three.txt")
    (tmp_path / "odd.txt").write_text("\n".join(["happy"] * 12))
    with pytest.raises(ConfigError, match="Label 'happy'.*'neg'"):
        hf_task(text_files["classifier"], text_files["root"] / "texts.txt", labels=tmp_path / "odd.txt")
    with pytest.raises(ModelFileError, match="not a Hugging Face model folder"):
        hf_task(tmp_path, text_files["root"] / "texts.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        hf_task(text_files["classifier"], tmp_path / "bad.jsonl")
    monkeypatch.delenv("MODELPRESS_HF_MODEL", raising=False)
    with pytest.raises(ConfigError, match="MODELPRESS_HF_MODEL"):
        load_task("hf-text")


# ---- image folder -------------------------------------------------------------------------------------

def photos(n: int = 12):
    """RGB uint8 images of different sizes: scikit-image's photos when installed, else generated ones."""
    try:
        from skimage import data

        base = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:96, 0:128]
        base = [np.stack([(xx * (i + 1)) % 256, (yy * (i + 2)) % 256, ((xx + yy) * 3 + 40 * i) % 256], -1)
                .astype(np.uint8) for i in range(4)]
        base = [np.clip(b + rng.integers(0, 40, b.shape), 0, 255).astype(np.uint8) for b in base]
    return [np.ascontiguousarray(np.rot90(base[i % len(base)], i // len(base))) for i in range(n)]


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    flat, by_class = root / "flat", root / "by_class"
    for i, img in enumerate(photos()):
        (flat / "sub" if i % 2 else flat).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save((flat / "sub" if i % 2 else flat) / f"img{i}.png")
        (by_class / ["cat", "dog", "2"][i % 3]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(by_class / ["cat", "dog", "2"][i % 3] / f"img{i}.jpg")
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"},
                                    label2id={"cat": 0, "dog": 1, "bird": 2})
    torch.manual_seed(0)
    transformers.ResNetForImageClassification(cfg).eval().save_pretrained(str(root / "model"))
    return root


def test_image_folder_top1_agreement_without_labels(image_setup, tmp_path):
    from modelpress.export import onnx as onnx_export
    from modelpress.tasks.image_folder import task as image_task

    task = image_task(image_setup / "flat", image_setup / "model", image_size=32)
    assert task.example_inputs(1)["pixel_values"].shape == (1, 3, 32, 32)
    assert task.preprocessing["metric"].startswith("top-1 agreement")
    model = task.build_model()
    for data in (task.val_data, task.test_data):
        assert evaluate(torch_predict(model, task), task, data) == 1.0  # the fp32 model agrees with itself
    art = onnx_export.export(model, task, tmp_path / "onnx")
    assert evaluate(predict_fn(open_session(art)), task, task.test_data) >= 0.99


def test_image_folder_labels_from_class_folders(image_setup):
    from modelpress.tasks.image_folder import task as image_task

    task = image_task(image_setup / "by_class", image_setup / "model", image_size=32)
    files = sorted(p for p in (image_setup / "by_class").rglob("*.jpg"))
    want = np.array([{"cat": 0, "dog": 1, "2": 2}[p.parent.name] for p in files])
    _, val, test = split_slices(len(files), 64)
    assert np.array_equal(task.val_data.targets, want[val]) and np.array_equal(task.test_data.targets, want[test])
    assert val.start == 3 and test.stop == len(files)  # everything after the 3 calibration images is held out
    assert task.preprocessing["metric"] == "accuracy"


def test_image_folder_bad_input(image_setup, tmp_path, monkeypatch):
    from modelpress.task import load_task
    from modelpress.tasks.image_folder import task as image_task

    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ModelFileError, match="broken.png"):
        image_task(tmp_path, image_setup / "model")
    with pytest.raises(ConfigError, match="No images"):
        image_task(image_setup / "model", image_setup / "model")
    monkeypatch.setenv("MODELPRESS_IMAGE_DIR", str(image_setup / "flat"))
    monkeypatch.setenv("MODELPRESS_IMAGE_MODEL", str(image_setup / "model"))
    monkeypatch.setenv("MODELPRESS_IMAGE_SIZE", "32")
    held_out = load_task("image-folder")
    assert held_out.val_data.num_samples + held_out.test_data.num_samples == 9
    monkeypatch.setenv("MODELPRESS_IMAGE_SIZE", "big")
    with pytest.raises(ModelpressError, match="MODELPRESS_IMAGE_SIZE"):
        load_task("image-folder")
