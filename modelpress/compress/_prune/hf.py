"""Hugging Face models after channel pruning: ``save_pretrained`` folders that reload exactly.

A Hugging Face config holds one ``num_attention_heads`` and one ``intermediate_size`` for every layer, and
BERT derives the head size from ``hidden_size / num_attention_heads``, so no config value describes a BERT
with pruned heads (2 heads of 32 channels would read back as 2 heads of 192 in MiniLM). transformers 5
also removed ``prune_heads`` and ``config.pruned_heads``, the record 4.x replayed on load (heads only,
not FFN neurons). So the config keeps the *original* architecture and carries the pruning records
(the same data as the artifact manifest's ``pruning``, layer names relative to the Hugging Face model)
under ``RECORD_KEY``; :func:`from_pretrained` builds the original model from the config, replays the cuts
(``_surgery.apply_cuts``) and loads the saved weights, checking that every one is there with its shape.
Layers may end with different head or neuron counts (``scope: global``): the record says which.

Plain ``AutoModel.from_pretrained`` on such a folder is refused by transformers 5 (size mismatch, with
``ignore_mismatched_sizes`` off by default) instead of loading wrong weights.

>>> # pruned = prune.apply(task.build_model(), prune.Config(ratio=0.5), task).model
>>> # pruned.model.save_pretrained("minilm-pruned")       # config.json gets "modelpress_pruning"
>>> # bert = prune.from_pretrained("minilm-pruned")         # the pruned BertModel, same outputs
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ModelFileError, ModelpressError

RECORD_KEY = "modelpress_pruning"


def attach(model: nn.Module, pruning: dict[str, Any]) -> list[str]:
    """Append ``pruning`` to the config of each outermost Hugging Face model inside ``model`` (layer names
    made relative to it); the names of those models ("" for ``model`` itself)."""
    done: list[str] = []
    for prefix, sub in model.named_modules():
        config = getattr(sub, "config", None)
        if not (hasattr(sub, "save_pretrained") and hasattr(config, "to_dict")):
            continue
        if any(prefix == d or prefix.startswith(f"{d}.") or d == "" for d in done):
            continue  # an inner model (e.g. .bert of BertForSequenceClassification) shares the outer config
        start = f"{prefix}." if prefix else ""
        cuts = [{**c, "layer": c["layer"][len(start):]} for c in pruning["cuts"] if c["layer"].startswith(start)]
        earlier = list(getattr(config, RECORD_KEY, None) or [])
        setattr(config, RECORD_KEY, earlier + [{**pruning, "cuts": cuts}])
        done.append(prefix)
    return done


def from_pretrained(folder: str | Path, auto_class: str = "AutoModel", **kwargs: Any) -> nn.Module:
    """The model ``save_pretrained`` wrote to ``folder``, pruned or not (``kwargs`` go to transformers,
    e.g. ``attn_implementation="eager"``). Local files only; never runs code from the folder."""
    import transformers

    from .. import _surgery
    from .channel import RECORD_VERSION

    folder = Path(folder)
    auto = getattr(transformers, auto_class)
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    records = getattr(config, RECORD_KEY, None)
    if not records:
        return auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, **kwargs)
    model = auto.from_config(config, **kwargs)
    for rec in records:
        if rec.get("version") != RECORD_VERSION:
            raise ModelpressError(f"{folder}/config.json: unknown pruning record version {rec.get('version')!r}; "
                                  f"expected {RECORD_VERSION}.")
        _surgery.apply_cuts(model, rec["cuts"])
    load_weights(model, folder)
    return model.eval()


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load every ``*.safetensors`` file of ``folder`` into ``model``; a missing weight, or one whose shape
    differs, is an error (tied weights need one of their names; buffers the model does not save are ignored)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFileError(f"{folder} has no .safetensors weights (save with save_pretrained's default "
                             f"safe_serialization).")
    saved: dict[str, Any] = {}
    for f in files:
        saved.update(load_file(str(f)))
    own = model.state_dict(keep_vars=True)
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    saved = {k if k in own else k.removeprefix(prefix): v for k, v in saved.items()}
    aliases: dict[int, list[str]] = {}
    for k, v in own.items():
        aliases.setdefault(id(v), []).append(k)
    missing = [names[0] for names in aliases.values() if not any(n in saved for n in names)]
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})" for k, v in saved.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise ModelFileError(f"The weights in {folder} do not fit its config.json and pruning record: "
                             f"missing {missing[:5]}, wrong shape {wrong[:5]}.")
    model.load_state_dict({k: v for k, v in saved.items() if k in own}, strict=False)
