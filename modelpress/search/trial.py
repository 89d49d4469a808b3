"""One trial, as run by a worker: compress (reusing cached prefixes), a cheap evaluation on a subset of
the validation data that stops hopeless candidates, then the full measurement of ``pipeline.measure``.

A job is plain data (the candidate's recipe, the technique table, settings) and so is its outcome
(the result as result.json data, the per-layer table, the artifact's files as bytes), so the same
function runs inline, in a worker process or as a Ray task on another machine.
"""
from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

_CONTEXT: dict[str, dict[str, Any]] = {}  # per process: task name -> task, fp32 model, scores
_CACHES: dict[str, Any] = {}  # per process: cache folder -> PrefixCache
_STAGE: dict[str, Any] = {"now": None, "step": None, "report": None}  # per process: what the running trial does


def report_stages(callback: Any) -> None:
    """Pass every ``stage`` of this process's trials to ``callback(text, step)`` (a worker tells its driver)."""
    _STAGE["report"] = callback


def stage(text: str, step: str | None = None) -> None:
    """Say what the running trial does now ('applying lowrank', 'measuring'); ``step`` names the technique
    being applied. A worker that can be stopped at a time limit passes it on (``report``), so the outcome of
    a stopped or crashed trial says where it was."""
    _STAGE["now"], _STAGE["step"] = text, step
    if _STAGE["report"] is not None:
        _STAGE["report"](text, step)


def context(task_name: str, scores: tuple[float, float] | None = None) -> dict[str, Any]:
    """The task, its fp32 model, the model's scores (validation and test) and fingerprint, once per process.
    ``scores`` (validation, test), when the driver measured them already, spare a worker evaluating the fp32
    model again (minutes on a real model)."""
    if task_name not in _CONTEXT:
        from ..evaluate import torch_predict
        from ..pipeline import Scores, check_finite
        from ..task import load_task
        from .cache import model_fingerprint

        task = load_task(task_name)
        model = task.build_model()
        check_finite(model)
        known = Scores(*scores) if scores is not None else Scores.of(torch_predict(model, task), task)
        _CONTEXT[task_name] = {"task": task, "model": model, "scores": known, "baseline": _baseline_cache(),
                               "fingerprint": model_fingerprint(model), "subset_scores": {},
                               "model_package": type(model).__module__.split(".")[0] + "."}
    return _CONTEXT[task_name]


BASELINE_PREFIX = "modelpress-baseline-"


def _baseline_cache() -> Any:
    """This process's :class:`~modelpress.pipeline.BaselineCache`, in a temporary folder removed at exit. Its
    name carries the search's process id (the parent's, in a worker), so the search removes the folders of
    workers it had to kill (:func:`remove_baseline_caches`)."""
    import atexit
    import multiprocessing
    import os
    import shutil
    import tempfile

    from ..pipeline import BaselineCache

    owner = os.getppid() if multiprocessing.parent_process() is not None else os.getpid()
    remove_baseline_caches(owner=0)  # left by searches killed before they could clean up
    folder = tempfile.mkdtemp(prefix=f"{BASELINE_PREFIX}{owner}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return BaselineCache(Path(folder))


def remove_baseline_caches(owner: int | None = None) -> None:
    """Remove the baseline folders the workers of process ``owner`` (default: this one) left (a killed worker
    runs no exit handler); ``owner=0``: those of every search process that no longer runs (one killed itself)."""
    import os
    import shutil
    import tempfile

    for folder in Path(tempfile.gettempdir()).glob(f"{BASELINE_PREFIX}*-*"):
        pid = folder.name[len(BASELINE_PREFIX):].split("-")[0]
        if not pid.isdigit():
            continue
        if (owner is None and int(pid) == os.getpid()) or (owner == 0 and not _running(int(pid))) or owner == int(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prefix_cache(folder: str | None, ctx: dict[str, Any]) -> Any:
    from .cache import PrefixCache

    key = str(folder)
    if key not in _CACHES:
        _CACHES[key] = PrefixCache(Path(folder) if folder else None, allowed=(ctx["model_package"],))
    return _CACHES[key]


def prefix_keys(task_name: str, fingerprint: str, steps: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One key per prefix: task, fp32 weights, the steps so far and the code of their techniques."""
    from .. import registry
    from .cache import digest, technique_code_hash

    code = {name: technique_code_hash(registry.module("technique", name)) for name, _ in steps}
    return [digest({"task": task_name, "model": fingerprint, "steps": steps[:k], "code": code})
            for k in range(1, len(steps) + 1)]


def compress_cached(ctx: dict[str, Any], recipe: Any, cache: Any) -> tuple[Any, int]:
    """The recipe's steps applied to the fp32 model, starting from the longest cached prefix. Returns the
    ``Applied`` and how many steps came from the cache."""
    import copy

    from .. import registry
    from ..compress import Applied
    from ..config import to_dict
    from ..layer_timing import tools_for

    steps = [(s.name, to_dict(s.config)) for s in recipe.steps]
    keys = prefix_keys(recipe.task, ctx["fingerprint"], steps)
    start, applied = 0, None
    for k in range(len(keys), 0, -1):
        applied = cache.get(keys[k - 1])
        if applied is not None:
            start = k
            break
    if applied is None:
        applied = Applied.of(copy.deepcopy(ctx["model"]))  # the context's fp32 model stays untouched
    example, tools = ctx["task"].example_inputs(2), tools_for(recipe)
    for k in range(start, len(steps)):
        step = recipe.steps[k]
        stage(f"applying {step.name}", step.name)
        applied = registry.module("technique", step.name).apply(applied, step.config, ctx["task"], tools)
        cache.put(keys[k], applied, example)
    return applied, start


def early_stop_threshold(max_score_drop: float | None, margin: float | None, base: float, n: int,
                         total: int) -> float | None:
    """The subset score drop above which a candidate is hopeless: the limit plus a noise margin (three
    binomial standard errors for metrics in [0, 1], none when the subset is the whole evaluation set)."""
    if max_score_drop is None:
        return None
    if n >= total:
        return max_score_drop
    if margin is None:
        if not 0.0 <= base <= 1.0:
            return None  # unknown metric scale: no early stop without an explicit margin
        margin = 3.0 * math.sqrt(max(base * (1 - base), 1e-4) / n) + 1.0 / n
    return max_score_drop + margin


def cheap_evaluation(applied: Any, ctx: dict[str, Any], recipe: Any, folder: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Export, load on the runtime and score on the first ``subset_samples`` validation samples."""
    from ..evaluate import evaluate, predict_fn, torch_predict
    from ..isolate import probe
    from ..pipeline import export_model
    from ..runtime import open_session

    task = ctx["task"]
    total = task.val_data.num_samples
    n = min(job["subset_samples"], total)
    subset = task.val_data.take(n)
    if n not in ctx["subset_scores"]:
        ctx["subset_scores"][n] = evaluate(torch_predict(ctx["model"], task), task, subset)
    base = ctx["subset_scores"][n]
    stage("exporting and scoring on the validation subset")
    art = export_model(applied, task, recipe, folder)
    # A runtime that crashes on this artifact crashes a child process, not the search (a failed trial).
    probe(art, recipe.runtime, task.example_inputs(1))
    score = evaluate(predict_fn(open_session(art, recipe.runtime)), task, subset)
    drop = task.score_drop(base, score)
    threshold = early_stop_threshold(job.get("max_score_drop"), job.get("margin"), base, n, total)
    return {"samples": n, "score": score, "baseline_score": base, "score_drop": drop, "threshold": threshold,
            "size_bytes": art.size_bytes, "stop": threshold is not None and drop > threshold}


def weight_table(before: Any, after: Any) -> list[dict[str, Any]]:
    """Per layer with weights: type, parameters before and after, share of zero weights, distinct values."""
    import torch

    def leaves(model: Any) -> dict[str, Any]:
        return {n: m for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}

    old, new = leaves(before), leaves(after)
    rows = []
    for name in list(old) + [n for n in new if n not in old]:
        row: dict[str, Any] = {"layer": name or "(model)"}
        for tag, table in (("before", old), ("after", new)):
            m = table.get(name)
            row[f"type_{tag}"] = type(m).__name__ if m is not None else None
            row[f"params_{tag}"] = sum(p.numel() for p in m.parameters(recurse=False)) if m is not None else 0
        w = getattr(new.get(name), "weight", None)
        if isinstance(w, torch.Tensor) and w.numel() > 0:
            row["zeros"] = float((w == 0).float().mean())
            row["distinct_values"] = int(torch.unique(w.detach()).numel()) if w.numel() <= 2_000_000 else None
        rows.append(row)
    return rows


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one candidate; never raises (a failure is an outcome with its error)."""
    from .. import registry

    started = time.perf_counter()
    stage("starting")
    try:
        with registry.overlay("technique", job["techniques"]):  # the driver's table: same techniques here
            outcome = _run(job)
    except Exception as e:  # one bad candidate must not end the study: it is recorded as failed
        tail = "".join(traceback.format_exception(e)[-3:])[-2000:]
        error = f"{type(e).__name__}: {str(e)[:1000]}"
        from ..errors import ModelpressError

        outcome = {"status": "failed", "error": error, "traceback": tail, "stage": _STAGE["now"],
                   "step": _STAGE["step"], "refused": isinstance(e, ModelpressError), "ended": f"failed while {_STAGE['now']}: {error.splitlines()[0][:300]}"}
    outcome["seconds"] = {**outcome.get("seconds", {}), "total": time.perf_counter() - started}
    outcome["worker"] = worker_identity()
    return outcome


def worker_identity() -> dict[str, Any]:
    """Where the trial ran: host, process, and the Ray node when it ran as a Ray task."""
    import sys

    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ctx = ray.get_runtime_context()
        out.update(ray_node=ctx.get_node_id(), ray_worker=ctx.get_worker_id())
    return out


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from ..pipeline import measure
    from ..recipe import parse_recipe

    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    recipe = parse_recipe(job["recipe"])
    ctx = context(recipe.task, job.get("scores"))
    t0 = time.perf_counter()
    applied, reused = compress_cached(ctx, recipe, prefix_cache(job.get("cache_dir"), ctx))
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelpress-trial-") as tmp:
        cheap = cheap_evaluation(applied, ctx, recipe, Path(tmp) / "cheap", job)
        t2 = time.perf_counter()
        seconds = {"compress": t1 - t0, "cheap_evaluation": t2 - t1}
        if cheap["stop"]:
            ended = (f"stopped early: the drop on {cheap['samples']} validation samples, {cheap['score_drop']:.4g}, "
                     f"is over {cheap['threshold']:.4g}")
            return {"status": "pruned", "ended": ended, "subset": cheap, "reused_steps": reused, "seconds": seconds}
        stage("measuring")
        result = measure(applied, ctx["model"], ctx["task"], recipe, Path(tmp) / "full", ctx["scores"],
                         ctx["baseline"])
        folder = Path(tmp) / "full" / "artifact"
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    seconds["measure"] = time.perf_counter() - t2
    return {"status": "complete", "ended": "measured", "result": result.to_json(), "subset": cheap,
            "layers": weight_table(ctx["model"], applied.model), "files": files, "reused_steps": reused,
            "seconds": seconds}
