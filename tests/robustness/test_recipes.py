"""Recipes that would crash, hang or exhaust memory are refused quickly with a ConfigError, and numbers
that would make a constraint impossible to miss (NaN) or a run absurd (10^9 epochs) are refused with
their limits."""
from __future__ import annotations

import math
import os
import resource
import time

import pytest

from modelpress import safeyaml
from modelpress.cli import main
from modelpress.errors import ConfigError, ModelFileError
from modelpress.constraints import Quantities
from modelpress.recipe import Constraints, load_recipe, parse_recipe

from .hostile import clean_error, modelpress

# The "billion laughs": 442 bytes whose aliases expand to 10^9 values.
BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"


def write(tmp_path, text: str | bytes, name="r.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def refused_fast(path, needle, seconds=5.0):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert time.perf_counter() - t0 < seconds
    assert needle in str(e.value), str(e.value)
    return str(e.value)


def test_alias_bomb_is_refused_at_once(tmp_path):
    assert len(BOMB) < 600
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused_fast(write(tmp_path, BOMB), "expand to more than 20,000 values", 2.0)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB: no gigabytes


@pytest.mark.parametrize("text, needle", [
    ("a: &a [*a]\ntask: digits\n", "refers to the value that contains it"),
    ("task: " + "[" * 200 + "]" * 200, "nests deeper than 32 levels"),
    ("task: digits\nbench: {batch_sizes: [" + ", ".join(["1"] * 30000) + "]}\n", "more than 20,000 values"),
    ("task: digits\nsteps: 1" + "0" * 5000 + "\n", "YAML cannot read"),
    ("task: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
    ("task: digits\nkey: 2020-13-45\n", "YAML cannot read"),
    ("[1, 2", "not valid YAML"),
])
def test_hostile_yaml_is_a_config_error(tmp_path, text, needle):
    refused_fast(write(tmp_path, text), needle)


def test_non_utf8_and_oversized_files(tmp_path):
    refused_fast(write(tmp_path, b"task: digits\n# caf\xe9\n"), "not UTF-8 text (byte 0xe9 at offset 18)")
    refused_fast(write(tmp_path, "bench: {batch_sizes: [" + "1, " * 17_000_000 + "1]}\n", "big.yaml"),
                 "larger than 256 KiB")  # 50 MB: refused before reading it
    assert load_recipe(write(tmp_path, "\ufefftask: digits\n", "bom.yaml")).task == "digits"
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_recipe(tmp_path)
    os.mkfifo(tmp_path / "fifo.yaml")  # would block a reader forever
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_recipe(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(write(tmp_path, "", "empty.yaml"))


def test_cli_recipe_errors_have_no_traceback(tmp_path):
    clean_error(modelpress("run", str(write(tmp_path, BOMB)), "-o", str(tmp_path / "o")), "aliases expand")
    clean_error(modelpress("run", str(write(tmp_path, b"task: \xff\xfe\n")), "-o", str(tmp_path / "o")), "not UTF-8")
    assert not (tmp_path / "o").exists()


def test_long_and_markup_task_strings_print_plainly(tmp_path, capsys):
    long = "x" * 200_000 + ":task"
    t0 = time.perf_counter()
    assert main(["run", str(write(tmp_path, f"task: '{long}'\n")), "-o", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 10
    captured = capsys.readouterr()
    assert "4,096" in captured.err and len(captured.err) + len(captured.out) < 2000
    for task in ("mod[/x]:task", "[bold]mod:task", "mod:task[/]", "a\\x1b[31m:b"):  # YAML's escape for ESC
        assert main(["run", str(write(tmp_path, f"task: \"{task}\"\n")), "-o", str(tmp_path / "o")]) == 2
        captured = capsys.readouterr()
        assert "MarkupError" not in captured.err and "Traceback" not in captured.err
        assert "not an import string" in captured.err and "\x1b" not in captured.err + captured.out
    assert main(["run", str(write(tmp_path, "task: a\x1b:b\n")), "-o", str(tmp_path / "o")]) == 2  # raw ESC
    assert "not valid YAML" in capsys.readouterr().err
    proc = modelpress("run", str(write(tmp_path, 'task: "mod[/x]:task"\n')), "-o", str(tmp_path / "o"))
    clean_error(proc, "not an import string")
    assert "loading task mod[/x]:task" in proc.stdout  # printed as written, not read as markup


@pytest.mark.parametrize("change, needle", [
    ({"constraints": {"max_score_drop": math.nan}}, "'recipe.constraints.max_score_drop' must be a finite number"),
    ({"constraints": {"max_score_drop": math.inf}}, "must be a finite number"),
    ({"constraints": {"max_latency_ms": math.nan}}, "must be a finite number"),
    ({"constraints": {"max_score_drop": -0.5}}, "max_score_drop must be >= 0"),
    ({"runtime": {"threads": 100_000}}, "'recipe.runtime.threads' must be between 1 and 1,024, got 100,000"),
    ({"bench": {"batch_sizes": [1, 10**8]}}, "'recipe.bench.batch_sizes' must be between 1 and 65,536"),
    ({"bench": {"batch_sizes": list(range(1, 200))}}, "at most 64"),
    ({"bench": {"rounds": 10**9}}, "must be between 1 and 100,000"),
    ({"steps": [{"finetune": {"epochs": 10**9}}]}, "'steps[0].finetune.epochs' must be between 0 and 10,000"),
    ({"steps": [{"quantize": {"qat_epochs": 10**9, "mode": "qat"}}]}, "qat_epochs' must be between 0 and 10,000"),
    ({"steps": [{"distill": {"temperature": math.nan}}]}, "must be a finite number"),
    ({"steps": [{"prune": {"ratio": 2**80}}]}, "must be between"),
    ({"search": {"trials": 10**7}}, "'recipe.search.trials' must be between 1 and 100,000"),
    ({"search": {"space": {"quantize": {"percentile": [math.nan]}}}}, "must be a finite number"),
    ({"task": "x" * 5000}, "at most 4,096"),
])
def test_numbers_must_be_finite_and_sane(change, needle):
    with pytest.raises(ConfigError) as e:
        parse_recipe({"task": "digits", **change})
    assert needle in str(e.value), str(e.value)


def test_a_nan_limit_can_never_pass_a_lost_model():
    """Before: max_score_drop .nan accepted, and a model 86 points worse reported constraints_met: true."""
    with pytest.raises(ConfigError, match="finite"):
        Constraints(max_score_drop=math.nan)
    limits = Constraints(max_score_drop=0.01)
    assert limits.check(Quantities(score_drop=0.86))
    assert limits.check(Quantities(score_drop=math.nan))  # a model whose outputs are NaN never passes


def test_yaml_limits_are_documented_numbers():
    assert safeyaml.MAX_BYTES == 256 << 10 and safeyaml.MAX_DEPTH == 32 and safeyaml.MAX_NODES == 20_000
