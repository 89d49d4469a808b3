"""Failures are data: what a study has left out, and why, kept in the study (``excluded``) so that a
continued study remembers it.

An entry names a technique (with exact settings, or any), a runtime setting (or any), the trial that
taught it and the reason; a candidate matching an entry is not run again. Entries come from:

- a technique that crashed while it was applied (any settings, any runtime), or refused its settings with a
  clear error (``ModelpressError``: those settings; a refusal names what in them does not fit the model);
- a step stopped at the trial time limit while it was applied (those settings);
- a step whose cost estimate is far over the trial limit (those settings; no trial);
- a failure after the steps on a runtime other than the deploy one: the runtime itself when the fp32
  model failed there, else that one technique on it. The deploy runtime is never left out, and with
  several steps the culprit is unknown, so nothing is.
"""
from __future__ import annotations

from typing import Any

from ..progress import log

ATTR = "excluded"  # the study's user attribute holding the entries


class Exclusions:
    def __init__(self, study: Any, space: Any):
        self.study, self.space = study, space

    def entries(self) -> list[dict[str, Any]]:
        return list(self.study.user_attrs.get(ATTR, []))

    def reason(self, cand: Any) -> str | None:
        """Why ``cand`` is not run, or None."""
        runtime = self.space.runtime_key(cand.runtime)
        for entry in self.entries():
            if entry.get("runtime") not in (None, runtime):
                continue
            if entry.get("technique") is None or any(
                    name == entry["technique"] and entry.get("settings") in (None, settings)
                    for name, settings in cand.steps):
                return f"left out: {entry['reason']}"
        return None

    def add(self, reason: str, trial: int | None, technique: str | None = None,
            settings: dict[str, Any] | None = None, runtime: str | None = None) -> None:
        """Leave out candidates with ``technique`` (with these ``settings``; None: any) on ``runtime`` (None:
        any); ``technique`` None with a runtime: everything on it."""
        entry = {"technique": technique, "settings": settings, "runtime": runtime, "trial": trial, "reason": reason}
        self.study.set_user_attr(ATTR, [*self.entries(), entry])
        what = technique and (technique + (f"({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else ""))
        log.info(f"{' on '.join(x for x in (what, runtime) if x)} is left out of the rest of this study: {reason}")

    def learn(self, number: int, cand: Any, outcome: dict[str, Any]) -> None:
        """Leave out what a failed or stopped trial shows cannot work (see the module's list)."""
        if outcome["status"] not in ("failed", "timeout") or outcome.get("stopped_by") == "search":
            return  # stopped because the search's own time ran out: nothing learnt about the step
        step, error = outcome.get("step"), str(outcome.get("error") or "")[:300]
        timeout = outcome["status"] == "timeout"
        if step:
            specific = timeout or outcome.get("refused")  # a crash is the technique's, a refusal its settings'
            settings = next((s for n, s in cand.steps if n == step), None) if specific else None
            why = ("reached its time limit while applying it" if timeout else
                   "refused these settings on this model" if outcome.get("refused") else "failed on this model")
            self.add(f"trial {number} {why}: {error}", number, technique=step, settings=settings)
            return
        runtime = self.space.runtime_key(cand.runtime)
        if runtime == self.space.runtime_key(self.space.runtimes[0]) or len(cand.steps) > 1:
            return
        technique = cand.steps[0][0] if cand.steps else None
        what = f"{technique} on {runtime}" if technique else f"the fp32 model on {runtime}"
        self.add(f"trial {number}: {what} {'reached its time limit' if timeout else 'failed'}: {error}", number,
                 technique=technique, runtime=runtime)
