"""The Optuna study in the output folder: opening, checking it belongs to the same recipe, recovering
trials a killed process left running, seeding, and reading trials back as records.

The study lives in ``OUT/study.db`` (SQLite through Optuna's RDB storage: every finished trial is
committed before the next starts, so a kill -9 loses at most the trials that were running; those are
marked failed as 'interrupted' on the next start and queued again with the same candidate).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..errors import ModelpressError
from ..locks import FolderLock
from . import pareto

MARKER = ".modelpress-auto"
STUDY_NAME = "modelpress-auto"
OWN_FILES = ("study.db", "cache", "trials", "best", "report.html", "report.md", "result.json", "search.json", ".lock")


def prepare_folder(out: Path, force: bool) -> None:
    """Create ``out``, or check it holds a study; ``force`` removes only what a previous search wrote."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ModelpressError(f"{out} exists and is not a 'modelpress auto' output folder; choose another folder "
                              f"(nothing in it was changed).")
    if force and out.exists():
        with FolderLock(out):
            for name in OWN_FILES:
                if name == ".lock":
                    continue
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def check_spec(out: Path, spec: dict[str, Any]) -> None:
    """The folder's study must come from the same search (task, space, constraints, bench, ...)."""
    path = out / "search.json"
    if not path.exists():
        from ..artifact import atomic_write_text

        atomic_write_text(path, json.dumps(spec, indent=2, sort_keys=True, default=str))
        return
    old = json.loads(path.read_text())
    changed = sorted(k for k in set(old) | set(spec) if json.dumps(old.get(k), sort_keys=True, default=str)
                     != json.dumps(spec.get(k), sort_keys=True, default=str))
    if changed:
        raise ModelpressError(
            f"{out} holds a search with different settings (changed: {', '.join(changed)}). Run the same recipe "
            f"to continue it, pass --force to start over in this folder, or choose another output folder.")


def open_study(out: Path, directions: list[str], seed: int, startup_trials: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(out).resolve() / 'study.db'}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True, directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    # Offset the seed by the trials already there, so a resumed run's random draws differ from the first run's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate, group
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.get_trials(deepcopy=False)), n_startup_trials=startup_trials, multivariate=True,
            group=True, constant_liar=True)
    return study


def recover(study: Any) -> list[int]:
    """Trials left running by a killed process: mark them failed ('interrupted') and queue the same
    candidate again. Only called while holding the folder lock, so no other driver owns them."""
    from optuna.trial import TrialState

    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)  # failed without an outcome: interrupted
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("seed", "candidate")}
        study.enqueue_trial(t.params, user_attrs={**attrs, "retry_of": t.number})
        lost.append(t.number)
    return lost


def finished(study: Any) -> int:
    """Trials that count toward ``trials``: complete, stopped early, or failed on their own. A repeat of a
    candidate already measured (answered from the result cache) does not count: ``trials`` distinct ones."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(1 for t in done if not interrupted(t) and not t.user_attrs.get("cached") and not t.user_attrs.get("skipped"))


def interrupted(trial: Any) -> bool:
    """A trial a killed process left running: failed, and without the outcome every finished trial has."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and "outcome" not in trial.user_attrs


def records(study: Any) -> list[dict[str, Any]]:
    """Every trial that finished (interrupted ones excluded) as a plain record."""
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or interrupted(t) or t.user_attrs.get("skipped"):
            continue  # a skipped proposal is said once, in the study's 'excluded' list
        outcome = t.user_attrs.get("outcome") or {}
        out.append({"number": t.number, "state": states[t.state], "label": t.user_attrs.get("label", "?"),
                    "candidate": t.user_attrs.get("candidate"), "recipe": t.user_attrs.get("recipe"),
                    "objectives": t.user_attrs.get("objectives") or {}, "values": pareto.values_of(outcome),
                    "outcome": outcome, "seed": t.user_attrs.get("seed"), "cached": t.user_attrs.get("cached", False),
                    "run": t.user_attrs.get("run")})
    return out
