"""``modelpress auto`` end to end on digits with two small stand-in techniques (``test_search_fakes``):
seeds and early stops, the Pareto front and the choice, reports (the HTML rendered by headless
Chromium), the chosen recipe reproduced by ``modelpress run``, and continuing a study."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelpress.errors import ModelpressError
from modelpress.recipe import load_recipe, parse_recipe
from modelpress.search.loop import auto

from . import test_search_fakes as fakes
from .conftest import fast

ROOT = Path(__file__).resolve().parents[1]
BENCH = {"batch_sizes": [1, 8], "warmup": 1, "rounds": 2, "runs_per_round": 2}
PINNED = {"backend": ["onnxruntime"]}  # these tests are about the search on one runtime (test_search_runtimes: several)
SEARCH = {"trials": 4, "subset_samples": 128,
          "space": {"techniques": ["shrink", "noise"], "shrink": {"rank_ratio": [0.5, 0.25]}, "noise": {"scale": [3.0, 0.0]},
                    "runtime": PINNED}}
RECIPE = {"task": "digits", "constraints": {"max_score_drop": 0.01}, "bench": BENCH, "search": SEARCH}


@pytest.fixture(scope="module")
def registered():
    with pytest.MonkeyPatch.context() as mp:
        fakes.register(mp)
        yield


@pytest.fixture(scope="module")
def searched(registered, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "digits"
    summary = auto(parse_recipe(RECIPE), out, workers=2)  # two worker processes
    return out, summary


def test_trials_ran_in_worker_processes(searched):
    import os

    out, summary = searched
    pids = {json.loads((out / f"trials/{r['trial']:04d}/outcome.json").read_text())["worker"]["pid"]
            for r in summary["trials"]}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_seeds_are_measured_and_hopeless_candidates_stop_early(searched):
    out, summary = searched
    rows = {r["seed"]: r for r in summary["trials"] if r["seed"]}
    assert {"fp32", "default:shrink", "default:noise"} <= set(rows) <= {"fp32", "default:shrink", "default:noise",
                                                                       "extends:1", "extends:2"}
    assert rows["fp32"]["state"] == "complete" and rows["fp32"]["score_drop"] == 0
    hopeless = rows["default:noise"]  # noise of 3 standard deviations ruins the model
    assert hopeless["state"] == "pruned" and hopeless["score_on"] == "128 validation samples"
    outcome = json.loads((out / f"trials/{hopeless['trial']:04d}/outcome.json").read_text())
    assert outcome["subset"]["score_drop"] > outcome["subset"]["threshold"] > 0.01
    assert "result" not in outcome and "measure" not in outcome["seconds"]  # never fully evaluated or timed
    assert not (out / f"trials/{hopeless['trial']:04d}/artifact").exists()
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] + summary["counts"]["failed"] == 4


def test_front_is_nondominated_feasible_and_the_choice_is_on_it(searched):
    _, summary = searched
    feasible = [r for r in summary["trials"] if r["feasible"]]
    assert summary["pareto"] and all(r["feasible"] for r in summary["pareto"])
    for p in summary["pareto"]:
        assert not any(r["latency_ms"] <= p["latency_ms"] and r["size_bytes"] <= p["size_bytes"]
                       and (r["latency_ms"] < p["latency_ms"] or r["size_bytes"] < p["size_bytes"]) for r in feasible)
    chosen = summary["chosen"]
    # the constraint is decided on validation data; the test score is what the row reports
    assert chosen["pareto"] and chosen["val_score_drop"] <= 0.01 and chosen["score_on"] == "test"
    assert all(r["val_score_drop"] <= 0.01 for r in feasible) and chosen["score_drop"] is not None
    # the front candidates no worse than every feasible single-technique default, when there are any
    defaults = [r for r in feasible if (r["seed"] or "").startswith("default:")]
    covering = [p for p in summary["pareto"] if all(p["latency_ms"] <= d["latency_ms"] and
                                                     p["size_bytes"] <= d["size_bytes"] for d in defaults)]
    pool = covering or summary["pareto"]
    assert chosen in pool
    best_latency = min(r["latency_ms"] for r in pool)
    assert chosen["latency_ms"] <= best_latency * 1.03  # latency first, within the tie tolerance


def test_reports_and_the_chosen_recipe_reproduce_with_modelpress_run(searched, tmp_path):
    from modelpress.pipeline import run

    out, summary = searched
    result = json.loads((out / "result.json").read_text())
    distinct = [t for t in result["trials"] if not t["cached"]]  # a repeated proposal is answered from the cache
    assert result["chosen"]["trial"] == summary["chosen"]["trial"] and len(distinct) == 4
    md = (out / "report.md").read_text()
    assert "## Pareto front" in md and "modelpress run best/recipe.yaml" in md
    html = (out / "report.html").read_text()
    measured = summary["counts"]["complete"]
    assert html.count(f'data-points="{measured}"') == 2 and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert yaml.safe_load(summary["chosen_recipe"]) == yaml.safe_load((out / "best/recipe.yaml").read_text())
    best = json.loads((out / "best/result.json").read_text())
    again = run(fast(load_recipe(out / "best/recipe.yaml")), tmp_path / "again")
    assert again.size_bytes == best["size_bytes"] == (out / "best/artifact/model.onnx").stat().st_size
    assert again.score == pytest.approx(best["score"]) and again.val_score == pytest.approx(best["val_score"])
    layers = {r["layer"]: r for r in summary["chosen_layers"]}
    split = [n for n, r in layers.items() if r["type_before"] == "Linear" and r["type_after"] is None]
    assert bool(split) == ("shrink" in summary["chosen"]["candidate"])  # per layer: what the steps changed
    for name in split:
        assert layers[f"{name}.0"]["params_after"] + layers[f"{name}.1"]["params_after"] < layers[name]["params_before"]


def test_html_report_renders_in_headless_chromium(searched, tmp_path):
    from modelpress.report.plots import COLORS

    image = pytest.importorskip("PIL.Image", reason="reading the screenshot needs Pillow")

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    out, summary = searched
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,1400"]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run([chromium, *flags, "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count('class="plot"') == 2 and 'id="plot-latency"' in dom and 'id="plot-size"' in dom
    pixels = image.open(shot).convert("RGB").getdata()

    def count(hex_color: str) -> int:
        want = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        return sum(1 for p in pixels if all(abs(a - b) <= 4 for a, b in zip(p, want)))

    assert count(COLORS["chosen"]) >= 60  # the chosen star, drawn in both plots
    assert count(COLORS["baseline"]) >= 40  # the fp32 diamonds


def test_running_again_adds_nothing_and_a_changed_recipe_is_refused(searched, registered):
    out, summary = searched
    again = auto(parse_recipe(RECIPE), out)
    assert [r["trial"] for r in again["trials"]] == [r["trial"] for r in summary["trials"]]
    assert again["chosen"]["trial"] == summary["chosen"]["trial"]
    changed = {**RECIPE, "constraints": {"max_score_drop": 0.02}}
    with pytest.raises(ModelpressError, match="different settings.*constraints.*--force"):
        auto(parse_recipe(changed), out)
    more = auto(parse_recipe(RECIPE), out, trials=5)  # a larger budget continues the same study
    distinct = [t for t in more["trials"] if not t["cached"]]
    assert len(distinct) == 5 and distinct[-1]["run"] == 3


LAUNCH = ("import sys; sys.path.insert(0, %r); import tests.test_search_fakes as f; f.register(); "
          "from modelpress.cli import main; sys.exit(main(sys.argv[1:]))" % str(ROOT))


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def trials_of(out):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="modelpress-auto", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: t for t in study.get_trials()}


def test_kill_9_then_the_same_command_loses_no_finished_trial(tmp_path):
    import time

    recipe = tmp_path / "auto.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "search": {**SEARCH, "trials": 4}}))
    out = tmp_path / "out"
    proc = cli("auto", str(recipe), "-o", str(out))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            counts = json.loads((out / "result.json").read_text())["counts"]
            if counts["complete"] + counts["pruned"] + counts["failed"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    before = {n: t for n, t in trials_of(out).items() if t.state.name in ("COMPLETE", "PRUNED")}
    assert len(before) >= 2
    running = [n for n, t in trials_of(out).items() if t.state.name == "RUNNING"]

    again = cli("auto", str(recipe), "-o", str(out))
    stdout, _ = again.communicate(timeout=600)
    assert again.returncode == 0, stdout
    after = trials_of(out)
    for n, t in before.items():  # every finished trial is still there, unchanged, from the first run
        assert after[n].state == t.state and after[n].values == t.values and after[n].params == t.params
        assert after[n].user_attrs["run"] == 1
    finished = [t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED", "FAIL") and "outcome" in t.user_attrs]
    assert len(finished) == 4 and any(t.user_attrs["run"] == 2 for t in finished)
    for n in running:  # a trial killed mid-way is queued again with the same candidate
        retry = [t for t in after.values() if t.user_attrs.get("retry_of") == n]
        assert retry
        if "candidate" in after[n].user_attrs:
            assert retry[0].user_attrs["candidate"] == after[n].user_attrs["candidate"]
        else:  # killed while its candidate was being drawn: the retry keeps what had been drawn
            assert all(retry[0].params.get(k) == v for k, v in after[n].params.items())
    assert "Pareto front" in stdout and "report.html" in stdout


def test_trials_run_on_a_local_ray_cluster(tmp_path, monkeypatch):
    # Keep the cluster on loopback: Ray otherwise binds to the machine's outward address.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is first imported (also by the CLI)
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case ray was imported earlier

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")
        recipe = tmp_path / "auto.yaml"
        recipe.write_text(yaml.safe_dump({**RECIPE, "search": {**SEARCH, "trials": 3}}))
        proc = cli("auto", str(recipe), "-o", str(tmp_path / "out"), "--ray", address)
        stdout, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout
        rows = json.loads((tmp_path / "out/result.json").read_text())["trials"]
        assert len(rows) == 3
        nodes = {n["NodeID"] for n in ray.nodes()}
        for row in rows:  # each trial ran in a worker process of this cluster, not in the CLI's process
            worker = json.loads((tmp_path / f"out/trials/{row['trial']:04d}/outcome.json").read_text())["worker"]
            assert worker["pid"] != proc.pid and worker["ray_node"] in nodes and worker["ray_worker"]
    finally:
        ray.shutdown()


def test_unreachable_ray_address_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = tmp_path / "auto.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    proc = cli("auto", str(recipe), "-o", str(tmp_path / "out"), "--ray", f"127.0.0.1:{port}")
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and f"Cannot reach a Ray cluster at 127.0.0.1:{port}" in stdout
    assert "Traceback" not in stdout


@pytest.mark.parametrize("change, message", [
    ({"constraints": {"max_score_drop": -0.01}}, "max_score_drop must be >= 0"),  # refused with the recipe
    ({"constraints": {"max_latency_ms": 1e-6}}, "max_latency_ms 1e-06 cannot be met: .* does nothing"),
    ({"constraints": {"max_size_bytes": 10}}, "max_size_bytes 10 cannot be met"),
    ({"search": {**SEARCH, "space": {"techniques": [], "runtime": PINNED}}}, "search space is empty"),
    ({"search": {**SEARCH, "space": {"techniques": ["shrink"], "max_steps": 0, "runtime": PINNED}}}, "search space is empty"),
    ({"search": {**SEARCH, "latency_batch_size": 64}}, "64 is not timed"),
])
def test_contradictory_impossible_or_empty_searches_fail_before_any_trial(registered, tmp_path, change, message):
    with pytest.raises(ModelpressError, match=message):
        auto(parse_recipe({**RECIPE, **change}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_energy_without_a_meter_is_a_clear_error(registered, tmp_path):
    from modelpress.energy import EnergyMeter

    if EnergyMeter().available:
        pytest.skip("this machine has a readable energy meter")
    with pytest.raises(ModelpressError, match="needs an energy meter"):
        auto(parse_recipe({**RECIPE, "constraints": {"max_energy_j": 0.001}}), tmp_path / "out")


def test_a_folder_that_is_not_a_search_is_left_alone(registered, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ModelpressError, match="not a 'modelpress auto' output folder"):
        auto(parse_recipe(RECIPE), tmp_path, force=True)
    assert (tmp_path / "mine.txt").read_text() == "keep" and len(list(tmp_path.iterdir())) == 1


def test_time_limit_starts_no_trial_that_cannot_end_in_time(registered, tmp_path):
    summary = auto(parse_recipe(RECIPE), tmp_path / "out", timeout_s=1e-3)
    assert summary["trials"] == [] and summary["chosen"] is None
    assert (tmp_path / "out/report.html").exists()  # the (empty) reports are written all the same


def test_repeated_proposals_do_not_count_and_an_exhausted_space_stops(registered, tmp_path):
    search = {"trials": 10, "subset_samples": 128, "startup_trials": 2,
              "space": {"techniques": ["shrink"], "max_steps": 1, "shrink": {"rank_ratio": [0.5, 0.25]}, "runtime": PINNED}}
    summary = auto(parse_recipe({**RECIPE, "search": search}), tmp_path / "out")
    measured = [r for r in summary["trials"] if not r["cached"]]
    labels = [r["candidate"] for r in measured]
    assert len(labels) == len(set(labels)) == 3  # fp32 and the two ranks, each measured once
    assert summary["counts"]["repeats"] == len(summary["trials"]) - 3 >= 50  # then it gave up on the space
    front = [r["candidate"] for r in summary["pareto"]]
    assert len(front) == len(set(front))


def test_each_runtime_setting_the_space_varies_has_its_own_fp32_reference():
    from types import SimpleNamespace

    from modelpress.search.loop import Search
    from modelpress.search.space import Candidate, resolve

    class Study:
        user_attrs: dict = {}

        def set_user_attr(self, key, value):
            self.user_attrs = {**self.user_attrs, key: value}

    r = parse_recipe({"task": "digits", "search": {"space": {"techniques": [], "runtime": {
        "backend": ["onnxruntime"], "threads": [2], "streams": [1, 2]}}}})
    search = SimpleNamespace(study=Study(), batch=32, space=resolve(r.search, r))

    def objectives(streams, ratio, fp32_ms):
        import dataclasses

        from modelpress.result import Result

        cand = search.space.baseline(f"onnxruntime streams={streams}")
        names = {f.name for f in dataclasses.fields(Result)}  # a result.json with only what this reads measured
        result = {**dict.fromkeys(names), "facts": {}, "notes": [], "violations": [], "latency_ratio": {"32": ratio},
                  "baseline_latency_ms": {"32": {"p50": fp32_ms}}, "size_bytes": 1}
        return Search._objectives(search, cand, {"result": result})["latency"]

    assert objectives(1, 0.5, 2.0) == 1.0
    assert objectives(2, 0.5, 1.0) == 0.5  # its own reference (fp32 on 2 streams), not the 1-stream one
    assert objectives(1, 0.25, 9.0) == 0.5  # the first 1-stream reference stays
    assert set(search.study.user_attrs["reference_ms"]) == {"onnxruntime streams=1", "onnxruntime streams=2"}


def test_each_runtime_gets_its_fp32_seed_and_latency_is_read_against_the_deploy_runtime(registered, tmp_path):
    pytest.importorskip("openvino")
    search = {"trials": 3, "subset_samples": 128, "objectives": ["latency", "size"],
              "space": {"techniques": ["shrink"], "max_steps": 1, "shrink": {"rank_ratio": [0.5]},
                        "runtime": {"backend": ["openvino", "onnxruntime"]}}}
    summary = auto(parse_recipe({**RECIPE, "search": search}), tmp_path / "out")
    rows = {r["seed"]: r for r in summary["trials"]}
    assert list(rows) == ["fp32", "default:shrink", "fp32:openvino"]  # the defaults, then fp32 on each other runtime
    assert rows["fp32"]["candidate"] == "fp32 on onnxruntime"  # the recipe's runtime is the deploy one
    assert rows["fp32:openvino"]["candidate"] == "fp32 on openvino"
    assert rows["default:shrink"]["candidate"].endswith("on onnxruntime")
    assert set(summary["reference_ms"]) == {"onnxruntime", "openvino"} and summary["deploy_runtime"] == "onnxruntime"
    ov, ref = rows["fp32:openvino"], summary["reference_ms"]
    assert ov["latency_vs_deploy"]["8"] == pytest.approx(ov["latency_ratio"]["8"] * ref["openvino"]["8"] / ref["onnxruntime"]["8"])
    assert rows["default:shrink"]["latency_vs_deploy"] == rows["default:shrink"]["latency_ratio"]
    assert "× fp32 on onnxruntime @8" in (tmp_path / "out/report.md").read_text()
