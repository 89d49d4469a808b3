"""Store a compressed ``nn.Module`` as data (a JSON skeleton plus safetensors), never as a pickle.

A compression step may change a model's structure (fewer channels, a layer split in two), so a state
dict alone cannot rebuild it. The skeleton records, per module, its class (importable by name from
``torch.nn``, ``modelpress`` or the task model's own package), its plain attributes (numbers, text,
tuples, namedtuples, lists and dicts of those) and the shapes and dtypes of its parameters and buffers.
Rebuilding creates each module without running its ``__init__``, restores those attributes and loads the tensors.

A model that holds anything else (forward hooks, parametrizations, other objects) is not storable:
:func:`skeleton` returns None and the caller keeps it
in memory only.
"""
from __future__ import annotations

import importlib
from typing import Any

SAFE_PREFIXES = ("torch.nn.", "modelpress.")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


class NotStorable(Exception):
    """The model holds something that is not plain data."""


def encode(value: Any, allowed: tuple[str, ...] = SAFE_PREFIXES) -> Any:
    """Tagged JSON: {"v": scalar} {"t": tuple} {"nt": [class, fields]} {"l": list} {"d": dict} {"dtype": name}.

    Only values that come back as they were: a namedtuple keeps its class (EfficientNet's ``_global_params``
    and ``_block_args`` are read by attribute), so it must be importable from ``allowed``; a subclass of a
    scalar or of tuple that is not a namedtuple (an enum member, say) is not storable."""
    import torch

    if value is None or type(value) in (bool, int, str) or isinstance(value, float):  # numpy floats are floats
        return {"v": value}
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        path = f"{type(value).__module__}:{type(value).__qualname__}"
        if resolve_namedtuple(path, allowed) is not type(value):
            raise NotStorable(f"namedtuple {path} does not resolve to itself")
        return {"nt": [path, [encode(v, allowed) for v in value]]}
    if type(value) in (tuple, torch.Size):  # torch.Size comes back as a plain tuple, which it compares equal to
        return {"t": [encode(v, allowed) for v in value]}
    if type(value) is list:
        return {"l": [encode(v, allowed) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"d": {k: encode(v, allowed) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise NotStorable(f"{type(value).__name__} value")


def decode(data: dict[str, Any], allowed: tuple[str, ...] = SAFE_PREFIXES) -> Any:
    import torch

    (tag, value), = data.items()
    if tag == "v":
        return value
    if tag == "t":
        return tuple(decode(v, allowed) for v in value)
    if tag == "nt":
        cls = resolve_namedtuple(value[0], allowed)
        return tuple.__new__(cls, [decode(v, allowed) for v in value[1]])  # runs no code of the class
    if tag == "l":
        return [decode(v, allowed) for v in value]
    if tag == "d":
        return {k: decode(v, allowed) for k, v in value.items()}
    if tag == "dtype":
        return getattr(torch, value)
    raise ValueError(f"unknown tag {tag}")


def _importable(path: str, allowed: tuple[str, ...]) -> Any:
    """The object named ``module:qualname``, only from allowed packages."""
    module_name, _, qualname = path.partition(":")
    if not (module_name + ".").startswith(allowed) or "<" in qualname:
        raise NotStorable(f"class {path} is outside the allowed packages")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def resolve_namedtuple(path: str, allowed: tuple[str, ...]) -> type:
    """The namedtuple class named ``module:qualname``, only from allowed packages."""
    obj = _importable(path, allowed)
    if not (isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")):
        raise NotStorable(f"{path} is not an importable namedtuple class")
    return obj


def resolve_class(path: str, allowed: tuple[str, ...]) -> type:
    """The nn.Module subclass named ``module:qualname``, only from allowed packages."""
    from torch import nn

    obj = _importable(path, allowed)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise NotStorable(f"{path} is not an importable nn.Module class")
    return obj


def skeleton(model: Any, allowed: tuple[str, ...] = SAFE_PREFIXES) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(skeleton, tensors) for ``model``, or None when it cannot be stored as data."""
    from torch import nn

    base_keys = set(nn.Module().__dict__)
    tensors: dict[str, Any] = {}
    seen: dict[int, str] = {}  # id(tensor) -> first path: tied weights are stored once, then aliased

    def node(m: Any, prefix: str) -> dict[str, Any]:
        cls = type(m)
        path = f"{cls.__module__}:{cls.__qualname__}"
        if resolve_class(path, allowed) is not cls:
            raise NotStorable(f"class {path} does not resolve to itself")
        if any(getattr(m, h, None) for h in _HOOK_DICTS) or getattr(m, "_forward_hooks_with_kwargs", None):
            raise NotStorable(f"module '{prefix}' has hooks")
        attrs = {k: encode(v, allowed) for k, v in m.__dict__.items() if k not in base_keys}
        params: list[Any] = []
        buffers: list[Any] = []
        for kind, table, out in (("p", m._parameters, params), ("b", m._buffers, buffers)):
            for name, t in table.items():
                full = f"{prefix}{name}"
                if t is None:
                    out.append([name, None])
                elif id(t) in seen:
                    out.append([name, {"alias": seen[id(t)]}])
                else:
                    seen[id(t)] = full
                    tensors[full] = t.detach().contiguous().clone()
                    out.append([name, {"requires_grad": bool(t.requires_grad)} if kind == "p" else {}])
        # lists of [name, value] pairs: the order of children is meaningful (nn.Sequential runs in it)
        children = [[name, None if c is None else node(c, f"{prefix}{name}.")] for name, c in m._modules.items()]
        return {"class": path, "training": m.training, "attrs": attrs, "params": params, "buffers": buffers,
                "non_persistent": sorted(m._non_persistent_buffers_set), "children": children}

    try:
        return node(model, ""), tensors
    except NotStorable:
        return None


def rebuild(data: dict[str, Any], tensors: dict[str, Any], allowed: tuple[str, ...] = SAFE_PREFIXES) -> Any:
    """The module described by ``skeleton`` with its tensors loaded (raises NotStorable on a bad class)."""
    from torch import nn

    aliases: list[tuple[Any, str, str, str]] = []

    def build(d: dict[str, Any], prefix: str) -> Any:
        cls = resolve_class(d["class"], allowed)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        for k, v in d["attrs"].items():
            m.__dict__[k] = decode(v, allowed)
        for kind, specs, table in (("p", d["params"], m._parameters), ("b", d["buffers"], m._buffers)):
            for name, spec in specs:
                if spec is None:
                    table[name] = None
                elif "alias" in spec:
                    aliases.append((table, name, spec["alias"], kind))
                elif kind == "p":
                    table[name] = nn.Parameter(tensors[f"{prefix}{name}"], requires_grad=spec["requires_grad"])
                else:
                    table[name] = tensors[f"{prefix}{name}"]
        m._non_persistent_buffers_set = set(d["non_persistent"])
        for name, child in d["children"]:
            m._modules[name] = None if child is None else build(child, f"{prefix}{name}.")
        m.training = d["training"]
        return m

    model = build(data, "")
    lookup = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}
    for table, name, target, _ in aliases:
        table[name] = lookup[target]
    return model
