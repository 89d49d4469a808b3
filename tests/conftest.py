"""Shared fixtures. Reference models train once and are cached in the user cache folder
(``$MODELPRESS_CACHE`` overrides it), so the suite is fast after the first run."""
from __future__ import annotations

import dataclasses

import pytest

from modelpress.bench import BenchConfig

FAST_BENCH = BenchConfig(batch_sizes=(1, 4), warmup=1, rounds=2, runs_per_round=2)


@pytest.fixture
def one_torch_thread():
    """Small models: one torch thread is as fast as two and much faster on a busy 2-core machine. A test
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_task():
    from modelpress.task import load_task

    return load_task("digits")


@pytest.fixture(scope="session")
def digits_model(digits_task):
    return digits_task.build_model()


def fast(recipe):
    """The same recipe with a short benchmark (tests check properties, not speed)."""
    return dataclasses.replace(recipe, bench=FAST_BENCH)
