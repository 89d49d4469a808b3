"""``auto(recipe, out)``: the search, top to bottom.

1. Resolve the space and check the settings and constraints (clear errors before any work).
2. Open or continue the study in ``out``; trials a killed run left running are queued again; a new
   study starts with the fp32 model on the deploy runtime, each technique alone at its defaults (on the
   deploy runtime, cheapest first by ``cost`` estimates), then the fp32 model on each other runtime setting.
3. While fewer than ``trials`` have finished: ask the sampler for one candidate per free worker, run
   them within the trial time limit (a candidate already measured costs nothing; one holding a step the
   study left out after a failure, a timeout or an estimate far over the limit is closed unmeasured), record each outcome in its trial folder and
   the study, tell the sampler, and rewrite the reports and ``best/`` (the best candidate so far).
   Never stops at the first feasible candidate: the study runs all its trials.
4. Return the summary (also in ``out/result.json``, ``report.md``, ``report.html``).

The latency objective is the candidate's paired latency ratio to fp32 (timed interleaved in the same
trial) times the study's fp32 reference latency on that runtime setting, so candidates timed minutes apart
compare without the machine's drift between fast and slow periods, and a faster runtime counts as a gain.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..artifact import atomic_write_text
from ..constraints import LIMITS
from ..progress import log
from ..result import Result
from . import pareto
from . import study as studies
from ..searchconfig import SearchConfig
from .cost import Profile, estimate_s, measure_profile, step_estimate_s
from .exclusions import Exclusions
from .space import Candidate, resolve

MAX_REPEATS = 50  # proposals in a row that repeat measured candidates before the search gives up on the space
OVER_LIMIT = 2.0  # a step whose estimate exceeds this many trial limits is left out unmeasured
MIN_TRIAL_S = 5.0  # a trial is not started with less time than this left before the invocation's limit


def auto(recipe: Any, out: str | Path, *, trials: int | None = None, workers: int | None = None,
         timeout_s: float | None = None, trial_timeout_s: float | None = None, ray_address: str | None = None,
         force: bool = False,
         on_trial: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Search ``recipe.search`` (defaults when absent) and write ``out``; returns the summary. The time limit
    (``timeout_s``) counts from this call: loading the task and measuring the fp32 model come out of it."""
    started = time.monotonic()
    from .checks import preflight
    from .runner import make_runner
    from .trial import context

    config = recipe.search or SearchConfig()
    overrides = {k: v for k, v in (("trials", trials), ("workers", workers), ("timeout_s", timeout_s),
                                   ("trial_timeout_s", trial_timeout_s)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    space = resolve(config, recipe)
    if ray_address and ray_address not in ("auto", "local"):
        from .runner import check_reachable

        check_reachable(ray_address)  # before any work
    log.info(f"loading task {recipe.task}")
    ctx = context(recipe.task)
    batch = preflight(recipe, config, space, ctx["task"])
    profile = measure_profile(ctx["model"], ctx["task"])
    out = Path(out)
    studies.prepare_folder(out, force)
    with studies.FolderLock(out):
        spec = spec_of(recipe, config, ctx["fingerprint"], batch)
        studies.check_spec(out, spec)
        startup = config.startup_trials or max(len(space.techniques) + len(space.runtimes) + 3, config.trials // 4)
        study = studies.open_study(out, ["minimize"] * len(config.objectives), config.seed, startup)
        for stale in (out / "trials").glob(".*"):
            shutil.rmtree(stale, ignore_errors=True)  # a staging folder a kill left behind
        lost = studies.recover(study)
        if lost:
            log.info(f"continuing: trial(s) {', '.join(map(str, lost))} were interrupted and are queued again")
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial({}, user_attrs={"seed": "fp32"})
            # cheap first: the single-technique defaults in the order of their estimated cost, then the fp32
            # model on each other runtime (a candidate, and that runtime's reference; its export may be slow)
            seeds = [(estimate_s(list(cand.steps), profile), params, cand) for params, cand in space.defaults()]
            for seconds, params, cand in sorted(seeds, key=lambda s: s[0]):
                study.enqueue_trial(params, user_attrs={"seed": f"default:{cand.steps[0][0]}", "estimate_s": seconds})
            for runtime in space.runtimes[1:]:
                study.enqueue_trial({}, user_attrs={"seed": f"fp32:{space.runtime_key(runtime)}"})
        run_id = int(study.user_attrs.get("runs", 0)) + 1
        study.set_user_attr("runs", run_id)
        search = Search(study, space, recipe, config, out, ctx, batch, run_id, on_trial, profile)
        runner = make_runner(config.workers, ray_address, limited=config.trial_limit_s() is not None,
                             task_name=recipe.task, scores=(ctx["scores"].val, ctx["scores"].test))
        try:
            search.loop(runner, started)
        finally:
            runner.close()
        return search.write_reports(final=True)


def spec_of(recipe: Any, config: SearchConfig, fingerprint: str, batch: int) -> dict[str, Any]:
    """What makes trials of two invocations comparable, so they may share a study: the same task and fp32
    weights, constraints (they decide the early stops), timing, objectives and early-stop settings. The
    space may change (narrowed, widened, or a technique's SEARCH_SPACE edited): earlier trials stay valid
    measurements. Trials, workers and time limits may change too."""
    from ..config import to_dict

    return {"task": recipe.task, "model": fingerprint, "constraints": to_dict(recipe.constraints),
            "bench": to_dict(recipe.bench), "objectives": list(config.objectives), "latency_batch_size": batch,
            "early_stop": [config.subset_samples, config.early_stop_margin], "seed": config.seed}


class Search:
    """The study plus what the loop needs to run and record trials."""

    def __init__(self, study: Any, space: Any, recipe: Any, config: SearchConfig, out: Path, ctx: dict[str, Any],
                 batch: int, run_id: int, on_trial: Callable[[dict[str, Any]], None], profile: Profile):
        from .cache import ResultCache

        self.study, self.space, self.recipe, self.config, self.out = study, space, recipe, config, out
        self.ctx, self.batch, self.run_id, self.on_trial = ctx, batch, run_id, on_trial
        base = study.user_attrs.get("base_s")  # the fp32 trial's time, once measured (by any invocation)
        self.profile = profile.with_base(base) if base is not None else profile
        self.results = ResultCache(out / "cache" / "results")
        self.chosen: int | None = None
        self.queued: set[str] = set()  # result keys of the extensions queued by this invocation
        self.durations: list[float] = []  # seconds of the trials this invocation ran (cached ones excluded)
        self.estimates: dict[int, float] = {}  # trial number -> its estimate, for the outcome
        self.excluded = Exclusions(study, space)

    def loop(self, runner: Any, started: float | None = None) -> None:
        """Run trials until ``trials`` have finished or no further one would end before ``timeout_s`` after
        ``started`` (a ``time.monotonic()`` value; default: now)."""
        started = time.monotonic() if started is None else started
        deadline = started + self.config.timeout_s if self.config.timeout_s else None
        pending: dict[Any, tuple[Any, Candidate, str]] = {}
        repeats = 0  # proposals in a row that repeat a measured candidate or one left out
        self.write_reports()
        while True:
            while (len(pending) < runner.slots and studies.finished(self.study) + len(pending) < self.config.trials
                   and (deadline is None or time.monotonic() + max(self._expected_s(), MIN_TRIAL_S) < deadline)):
                trial = self.study.ask()
                cand = self._sample(trial)
                if cand is None:
                    continue
                key = self._key(cand)
                why, self.estimates[trial.number] = self._left_out(cand)
                cached = None if why is not None else self.results.get(key)
                if cached is not None or why is not None:
                    if why is not None:
                        self._skip(trial, why)
                    else:
                        self.finish(trial, cand, cached, key, cached=True)
                    repeats += 1
                    if repeats >= MAX_REPEATS:
                        break
                    continue
                repeats = 0
                limit = self._limit_s(deadline)
                log.info(f"trial {trial.number}: {cand.label()} (estimated {self.estimates[trial.number]:.0f} s"
                         + (f", limit {limit:.0f} s)" if limit is not None else ")"))
                pending[runner.submit(self._job(cand), limit_s=limit, until=deadline)] = (trial, cand, key)
            if not pending and repeats >= MAX_REPEATS:
                log.info(f"the sampler proposed {MAX_REPEATS} measured or left-out candidates in a row: the space "
                         f"looks exhausted ({self.space.size()} candidates); widen it or ask for fewer trials")
                return
            if not pending:
                if deadline is not None and studies.finished(self.study) < self.config.trials:
                    log.info(f"time limit of {self.config.timeout_s:g} s: no further trial would end in time; "
                                  f"run the same command again to continue")
                return
            handle, outcome = runner.wait_one(list(pending))
            trial, cand, key = pending.pop(handle)
            self.finish(trial, cand, outcome, key, cached=False)

    def _limit_s(self, deadline: float | None) -> float | None:
        """This trial's time limit: the configured one, never past the invocation's deadline."""
        limit = self.config.trial_limit_s()
        if deadline is not None:
            left = deadline - time.monotonic()
            limit = left if limit is None else min(limit, left)
        return limit

    def _left_out(self, cand: Candidate) -> tuple[str | None, float]:
        """Why ``cand`` is not run (a step or runtime the study left out, or a step estimated far over the
        trial limit; None when it runs) and its estimated seconds."""
        why = self.excluded.reason(cand)
        if why is not None:
            return why, 0.0
        estimates = [(step_estimate_s(n, s, self.profile), n, s) for n, s in cand.steps]
        total = sum(e for e, _, _ in estimates) + (self.profile.base_s or 0.0)
        limit = self.config.trial_limit_s()
        if limit is not None and estimates and total > OVER_LIMIT * limit:
            seconds, name, settings = max(estimates, key=lambda e: e[0])
            reason = (f"{name}({', '.join(f'{k}={v}' for k, v in settings.items())}) is estimated at {seconds:.0f} s "
                      f"on this model, over {OVER_LIMIT:g}x the trial limit of {limit:.0f} s")
            self.excluded.add(reason, None, technique=name, settings=settings)
            return f"left out: {reason}", total
        return None, total

    def _skip(self, trial: Any, why: str) -> None:
        """Close a proposal that is not run: it neither counts toward ``trials`` nor appears as a trial."""
        from optuna.trial import TrialState

        trial.set_user_attr("skipped", why)
        trial.set_user_attr("outcome", {"status": "skipped", "ended": why, "seconds": {"total": 0.0}})
        self.study.tell(trial, state=TrialState.FAIL)

    def _expected_s(self) -> float:
        """The median duration of the trials measured so far (0 before the first): a trial starts only
        when it is expected to end within the time limit."""
        import statistics

        if len(self.durations) == 0:
            return 0.0
        return statistics.median(self.durations)

    def _sample(self, trial: Any) -> Candidate | None:
        from optuna.trial import TrialState

        try:
            seed = str(trial.user_attrs.get("seed") or "")
            fp32 = seed == "fp32" or seed.startswith("fp32:")  # 'fp32:<runtime key>': on another runtime setting
            cand = self.space.baseline(seed[5:] or None) if fp32 else self.space.sample(trial)
        except Exception as e:  # recorded as a failed trial, the search goes on
            trial.set_user_attr("outcome", {"status": "failed", "error": f"sampling failed: {e}"})
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr("candidate", cand.to_json())
        trial.set_user_attr("label", cand.label())
        trial.set_user_attr("recipe", cand.recipe_data(self.recipe))
        trial.set_user_attr("run", self.run_id)
        return cand

    def _key(self, cand: Candidate) -> str:
        from .cache import digest, package_hash

        return digest({"candidate": cand.to_json(), "spec": json.loads((self.out / "search.json").read_text()),
                       "code": package_hash()})

    def _job(self, cand: Candidate) -> dict[str, Any]:
        from .. import registry

        scores = self.ctx["scores"]
        return {"recipe": cand.recipe_data(self.recipe), "techniques": dict(registry.TECHNIQUES),
                "scores": (scores.val, scores.test),
                "cache_dir": str((self.out / "cache" / "prefix").resolve()), "subset_samples": self.config.subset_samples,
                "max_score_drop": self.recipe.constraints.max_score_drop, "margin": self.config.early_stop_margin}

    def finish(self, trial: Any, cand: Candidate, outcome: dict[str, Any], key: str, cached: bool) -> None:
        """Record one outcome: trial folder, result cache, study attributes, then tell the sampler."""
        from optuna.trial import TrialState

        files = outcome.pop("files", None) or {}
        if not cached:
            outcome["estimate_s"] = self.estimates.get(trial.number)
            seconds = (outcome.get("seconds") or {}).get("total", 0.0)
            self.durations.append(seconds)
            if not cand.steps and outcome["status"] == "complete" and self.profile.base_s is None:
                self.profile = self.profile.with_base(seconds)  # what exporting, scoring and timing cost
                self.study.set_user_attr("base_s", seconds)
            self.excluded.learn(trial.number, cand, outcome)
            outcome["artifact_dir"] = f"trials/{trial.number:04d}/artifact" if files else None
            self.results.put(key, outcome)
        self._write_trial(trial.number, cand, outcome, files)
        values = pareto.values_of(outcome)
        objectives = self._objectives(cand, outcome) if outcome["status"] == "complete" else {}
        if outcome["status"] == "complete" and any(not pareto.finite(objectives.get(o)) for o in self.config.objectives):
            missing = [o for o in self.config.objectives if not pareto.finite(objectives.get(o))]
            outcome = {**outcome, "status": "failed", "error": f"objective(s) not measured: {', '.join(missing)}"}
        trial.set_user_attr("outcome", outcome)
        trial.set_user_attr("objectives", objectives)
        trial.set_user_attr("cached", cached)
        for name, value in zip(LIMITS, self.recipe.constraints.margins(values)):
            trial.set_constraint(name, value)  # <= 0: met; the sampler steers away from misses
        if outcome["status"] == "complete":
            self.study.tell(trial, [objectives[o] for o in self.config.objectives])
        else:
            self.study.tell(trial, state=TrialState.PRUNED if outcome["status"] == "pruned" else TrialState.FAIL)
        summary = self.write_reports()
        row = next(r for r in summary["trials"] if r["trial"] == trial.number)
        self.on_trial({**row, "finished": studies.finished(self.study), "of": self.config.trials})

    def _objectives(self, cand: Candidate, outcome: dict[str, Any]) -> dict[str, float]:
        result, bs = Result.from_json(outcome["result"]), str(self.batch)
        # One fp32 reference per runtime setting of the space (backend, and e.g. threads, streams or precision
        # where the space varies them): the candidate's ratio is to fp32 timed on its own setting.
        key = self.space.runtime_key(cand.runtime)
        reference = dict(self.study.user_attrs.get("reference_ms", {}))
        if key not in reference:  # the first measurement on a runtime setting fixes its fp32 reference
            reference[key] = {b: v["p50"] for b, v in result.baseline_latency_ms.items()}
            self.study.set_user_attr("reference_ms", reference)
        return {"latency": result.latency_ratio[bs] * reference[key][bs], "size": float(result.size_bytes),
                "energy": result.energy_j_per_inference}

    def _write_trial(self, number: int, cand: Candidate, outcome: dict[str, Any], files: dict[str, bytes]) -> None:
        """``trials/NNNN/``: recipe.yaml, outcome.json and the artifact, complete or not at all."""
        root = self.out / "trials"
        root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{number:04d}.", dir=root))
        (stage / "recipe.yaml").write_text(yaml.safe_dump(cand.recipe_data(self.recipe), sort_keys=False))
        (stage / "outcome.json").write_text(json.dumps(outcome, indent=1, default=str))
        for rel, data in files.items():
            path = stage / "artifact" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        target = root / f"{number:04d}"
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)

    def write_reports(self, final: bool = False) -> dict[str, Any]:
        """result.json, report.md, report.html and best/ from the study as it stands now."""
        from ..report.html import render
        from .summary import markdown, summarize

        recs = studies.records(self.study)
        extra = {"latency_batch_size": self.batch, "baseline_score": self.ctx["scores"].test,
                 "baseline_val_score": self.ctx["scores"].val, "output": str(self.out),
                 "report": str(self.out / "report.html"), "reference_ms": self.study.user_attrs.get("reference_ms", {}),
                 "runs": self.run_id, "final": final, "excluded": self.excluded.entries(),
                 "trial_limit_s": self.config.trial_limit_s()}
        summary = summarize(recs, self.recipe, self.config, self.space, extra)
        atomic_write_text(self.out / "result.json", json.dumps(summary, indent=1, default=str))
        atomic_write_text(self.out / "report.md", markdown(summary))
        atomic_write_text(self.out / "report.html", render(summary))
        chosen = summary["chosen"]
        if chosen and chosen["trial"] != self.chosen:
            record = next(r for r in recs if r["number"] == chosen["trial"])
            self._write_best(record, summary["chosen_recipe"])
            self.chosen = chosen["trial"]
            if not final:
                self._extend(record)
        return summary

    def _extend(self, record: dict[str, Any]) -> None:
        """Queue the new choice's one-step extensions that were never measured (see ``Space.extensions``)."""
        if not record.get("candidate"):
            return
        for params, ext in self.space.extensions(Candidate.from_json(record["candidate"])):
            key = self._key(ext)
            if key in self.queued or self.results.get(key) is not None:
                continue
            self.queued.add(key)
            self.study.enqueue_trial(params, user_attrs={"seed": f"extends:{record['number']}"})

    def _write_best(self, record: dict[str, Any], recipe_yaml: str) -> None:
        """``best/``: the chosen candidate's recipe.yaml (``modelpress run`` reproduces it), result.json and
        artifact, replaced as a whole when a better candidate appears."""
        from ..outdir import publish

        stage = Path(tempfile.mkdtemp(prefix=".best.", dir=self.out))
        try:
            (stage / "recipe.yaml").write_text(recipe_yaml)
            (stage / "result.json").write_text(json.dumps(record["outcome"].get("result"), indent=2, default=str))
            source = record["outcome"].get("artifact_dir")
            if source and (self.out / source).is_dir():
                shutil.copytree(self.out / source, stage / "artifact")
            publish(stage, self.out / "best")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

