"""A recipe's task string names code to import and call: only a no-argument Python function defined in the
named module is called, and anything else is a clear ConfigError before any call."""
from __future__ import annotations

import os
import sys

import pytest

from modelpress.errors import ConfigError
from modelpress.task import Task, load_task

from .hostile import clean_error, modelpress

MODULE = '''
import subprocess
from subprocess import run as imported_run

from modelpress.tasks.digits import digits


def make():
    return digits()


def needs_args(size):
    return digits()


def broken():
    raise KeyError("no such column")


def not_a_task():
    return 42


class Factory:
    def __init__(self):
        raise RuntimeError("a class must not be called")


lam = lambda: digits()
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``hostile_user_task.py`` in the current folder, which is not on sys.path (as under the console script)."""
    (tmp_path / "hostile_user_task.py").write_text(MODULE)
    (tmp_path / "hostile_raises_on_import.py").write_text("x = 1\nraise ValueError('bad config at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    for name in ("hostile_user_task", "hostile_raises_on_import"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_a_module_in_the_current_folder_is_importable(user_module):
    assert isinstance(load_task("hostile_user_task:make"), Task)


@pytest.mark.parametrize("name, needle", [
    ("os:system", "standard library"), ("os:abort", "standard library"), ("subprocess:run", "standard library"),
    ("builtins:exit", "standard library"),
    ("hostile_user_task:Factory", "is a class, not a function defined in 'hostile_user_task'"),
    ("hostile_user_task:imported_run", "a function defined in 'subprocess'"),
    ("hostile_user_task:subprocess", "is a module"),
    ("hostile_user_task:needs_args", "needs arguments"),
    ("hostile_user_task:broken", "KeyError: 'no such column' ("),
    ("hostile_user_task:not_a_task", "returned int, not a modelpress Task"),
    ("hostile_user_task:missing", "has no 'missing'"),
    ("hostile_raises_on_import:f", "ValueError: bad config at import ("),
    ("no_such_module_anywhere:f", "No module named 'no_such_module_anywhere'"),
    ("mod[/x]:task", "not an import string"), ("a:b:c", "not an import string"), (":f", "not an import string"),
])
def test_anything_but_a_task_function_is_refused(user_module, monkeypatch, name, needle):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(ConfigError) as e:
        load_task(name)
    assert needle in str(e.value), str(e.value)
    assert not calls


def test_os_abort_in_a_recipe_does_not_kill_the_process(tmp_path):
    recipe = tmp_path / "r.yaml"
    for task in ("os:abort", "os:system", "posix:abort"):
        recipe.write_text(f"task: '{task}'\n")
        clean_error(modelpress("run", str(recipe), "-o", str(tmp_path / "o")), "standard library")
    assert not (tmp_path / "o").exists()


def test_the_docs_say_a_recipe_is_as_trusted_as_its_code():
    from .hostile import ROOT

    for doc in ("README.md", "docs/guarantees.md"):
        text = (ROOT / doc).read_text()
        assert "as trusted as" in text, doc
