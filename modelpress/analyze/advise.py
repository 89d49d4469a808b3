"""Recommendations from the measurements: which techniques fit this model, in which order, on which
runtime and precision for this machine. Every recommendation carries its reason and the measured
evidence behind it (shares of parameters, MACs and profiled time; per-layer score drops; CPU flags).

Decision, not mechanics: nothing here compresses anything. ``steps`` are recipe steps (technique ->
settings) that ``modelpress auto`` can start its search from; each is validated against the registered
technique's Config.

The rules, in short:

- time goes where the profile says (MAC shares when there is no profile). Convolutions → structured
  channel pruning (channel counts kept at the runtime's block size) then int8; linear layers → int8
  weights and half-rank factorization where it cuts MACs; depthwise convolutions → leave them alone
  (little compute, memory-bound) and prune the pointwise layers; attention → prune heads, int8 on the
  projections, float softmax and normalization.
- size goes where the parameters are: the layers holding most of them get int8/int4 weights,
  clustering or factorization, as far as their measured drops allow.
- a layer whose probe drop exceeds ``tolerance`` is left out of that technique (``exclude``).
"""
from __future__ import annotations

from typing import Any

from . import _evidence as ev
from ._hardware import hardware_advice

ORDER_REASON = ("Structural changes first (pruning, factorization): they change shapes and cost the most "
                "accuracy, so a recovery step (distillation from the original) follows them while the weights "
                "can still move; clustering and quantization come last because they freeze the final weights "
                "into few values, and calibration must see the weights that ship.")


def advise(table: dict[str, Any], profile: dict[str, Any] | None, sens: dict[str, Any] | None,
           hardware: dict[str, Any], tolerance: float = 0.005) -> dict[str, Any]:
    """The recommendations for one analyzed model (see the module docstring for the rules)."""
    prof1 = ev.batch_profile(profile, "1")
    prof_big = ev.batch_profile(profile, max(profile["batches"], key=int)) if prof1 else None
    facts = {
        "mac_share": ev.shares(table, "macs"), "param_share": ev.shares(table, "params"),
        "time_share": ev.time_shares(table, prof1), "time_share_large_batch": ev.time_shares(table, prof_big),
        "tolerance": tolerance,
    }
    tags = model_kinds(table, facts)
    recs: list[dict[str, Any]] = []
    if profile and profile.get("error"):
        recs.append(rec("blocker", "Make the model exportable first", profile["error"], {}))
    speed_basis = "time_share" if facts["time_share"] else "mac_share"
    recs += speed_advice(table, facts, speed_basis, sens, hardware, prof1, tolerance)
    recs += size_advice(table, facts, sens, tolerance)
    covered = {n for r in recs if r.get("step") and "quantize" in r["step"]
               for n in r["evidence"].get("int8_drop", {})}
    recs += precision_advice(table, sens, tolerance, covered)
    steps = ordered_steps(recs)
    if len(steps) > 1:
        names = [next(iter(s)) for s in steps]
        recs.append(rec("order", "Apply in this order: " + " → ".join(names), ORDER_REASON,
                        {"order": names}))
    recs += hardware_advice(hardware, tags, prof1, prof_big, facts)
    return {"model_kind": tags, "facts": facts, "recommendations": recs, "steps": steps,
            "summary": summary(tags, facts, speed_basis)}


def rec(category: str, title: str, reason: str, evidence: dict[str, Any], step: dict | None = None) -> dict:
    return {"category": category, "title": title, "reason": reason, "evidence": evidence, "step": step}


def model_kinds(table: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    macs = facts["mac_share"]
    tags = []
    if macs.get("conv", 0) + macs.get("depthwise", 0) >= 0.5:
        tags.append("conv-heavy")
    if macs.get("linear", 0) >= 0.5:
        tags.append("linear-heavy")
    if any(r["kind"] == "depthwise" for r in table["rows"]):
        tags.append("depthwise")
    if macs.get("attention", 0) > 0 or any(ev.row_kind(r) == "attention" for r in table["rows"]):
        tags.append("attention")
    return tags or ["mixed"]


def summary(tags: list[str], facts: dict[str, Any], basis: str) -> str:
    where_time = max(((k, v) for k, v in facts[basis].items() if k in ev.SPEED_KINDS), key=lambda kv: kv[1],
                     default=("none", 0.0))
    where_size = max(facts["param_share"].items(), key=lambda kv: kv[1], default=("none", 0.0))
    what = "measured kernel time" if basis == "time_share" else "MACs"
    return (f"{', '.join(tags)} model: {ev.pct(where_time[1])} of the {what} is in {where_time[0]} layers; "
            f"{ev.pct(where_size[1])} of the parameters are in {where_size[0]} layers.")


def _block(hardware: dict[str, Any]) -> int:
    """Channels per SIMD block of ONNX Runtime's blocked (NCHWc) convolutions: 16 on AVX-512, 8 on AVX2."""
    flags = hardware.get("flags", {})
    return 16 if flags.get("avx512f") else 8 if flags.get("avx2") else 1


def speed_advice(table, facts, basis, sens, hardware, prof1, tolerance) -> list[dict[str, Any]]:
    out = []
    share, macs = facts[basis], facts["mac_share"]
    what = (f"of the measured kernel time at batch {prof1['batch_size']}" if basis == "time_share" and prof1
            else "of the MACs (no profile)")
    conv_share = share.get("conv", 0.0)
    if conv_share >= 0.3:
        convs = ev.layers_of(table, "conv")
        ok30, bad30, d30 = ev.split_tolerant(sens, "prune30", convs, tolerance)
        ok50, _, d50 = ev.split_tolerant(sens, "prune50", convs, tolerance)
        block = _block(hardware)
        padded = (prof1 or {}).get("channel_padding", [])
        reason = (f"Convolutions take {ev.pct(conv_share)} {what} ({ev.pct(macs.get('conv', 0))} of the MACs). "
                  f"Removing whole channels shrinks the convolutions the runtime computes; zeroed weights would not. ")
        if padded:
            p = padded[0]
            reason += (f"ONNX Runtime computes convolutions in blocks of channels: it ran '{p['layer']}' with "
                       f"{p['runtime_channels']} channels for its {p['out_channels']}, so keep channel counts at "
                       f"multiples of {block} (round_to) or the pruned channels still cost time. ")
        has30, has50 = ev.probed(sens, "prune30"), ev.probed(sens, "prune50")
        measured = [f"{len(ok)} at {pct}" for ok, pct, has in ((ok30, "30%", has30), (ok50, "50%", has50)) if has]
        if measured:
            reason += (f"Of {len(convs)} convolutions, pruned alone without fine-tuning, these many lose at most "
                       f"{tolerance:g}: {', '.join(measured)}.")
        if has50 and ok50 and (not has30 or set(ok50) == set(ok30)):
            ratio, include = 0.5, ok50
        else:
            ratio, include = 0.3, ok30 if has30 else convs
        step = {"prune": {"method": "channel", "ratio": ratio, "round_to": block, "include": include}} if include else None
        if not include:
            reason += " No convolution tolerates pruning alone: prune only with fine-tuning (prune epochs > 0 or a distill step)."
        out.append(rec("technique", "Prune convolution channels (structured) for speed", reason,
                       {"conv_time_share": round(conv_share, 4), "conv_mac_share": round(macs.get("conv", 0), 4),
                        "channel_padding": padded, "prune30_drop": d30, "prune50_drop": d50,
                        "sensitive_layers": bad30}, step))
    if share.get("depthwise", 0.0) > 0:
        dw_t, dw_m = share.get("depthwise", 0.0), macs.get("depthwise", 0.0)
        out.append(rec("technique", "Leave the depthwise convolutions alone; compress the pointwise ones",
                       f"Depthwise convolutions take {ev.pct(dw_t)} {what} but do {ev.pct(dw_m)} of the MACs: they "
                       f"are bound by memory traffic, not arithmetic, so int8 or fewer MACs barely speed them up, and "
                       f"their channels are tied to the pointwise convolution before them. Prune and quantize the "
                       f"1x1 convolutions; keep depthwise layers in float (exclude them from int8).",
                       {"depthwise_time_share": round(dw_t, 4), "depthwise_mac_share": round(dw_m, 4),
                        "depthwise_layers": ev.layers_of(table, "depthwise")}))
    if share.get("linear", 0.0) >= 0.3:
        out += linear_speed(table, facts, share, what, sens, tolerance)
    if share.get("attention", 0.0) > 0.1 or (macs.get("attention", 0.0) > 0.1):
        att_t, att_m = share.get("attention", 0.0), macs.get("attention", 0.0)
        projections = [r["module"] for r in table["rows"] if r.get("in_attention")]
        ok8, bad8, d8 = ev.split_tolerant(sens, "int8", projections, tolerance)
        out.append(rec("technique", "Attention: prune heads, int8 on the projections, float softmax and norms",
                       f"Attention blocks take {ev.pct(att_t)} {what} with {ev.pct(att_m)} of the MACs: beyond the "
                       f"q/k/v/o products, time goes to reshapes, transposes and softmax that int8 does not speed up. "
                       f"Removing whole heads shrinks all of them at once; int8 pays on the projection matrices "
                       f"({len(ok8)} of {len(projections)} tolerate int8 alone).",
                       {"attention_time_share": round(att_t, 4), "attention_mac_share": round(att_m, 4),
                        "int8_drop": d8, "sensitive_layers": bad8},
                       {"prune": {"method": "channel", "ratio": 0.25, "include": sorted({p.rsplit(".", 1)[0] + ".*"
                                                                                          for p in projections})}}
                       if projections else None))
    return out


def linear_speed(table, facts, share, what, sens, tolerance) -> list[dict[str, Any]]:
    lin_t, lin_m = share.get("linear", 0.0), facts["mac_share"].get("linear", 0.0)
    rows = [r for r in table["rows"] if ev.row_kind(r) == "linear"]
    names = [r["module"] for r in rows]
    ok8, bad8, d8 = ev.split_tolerant(sens, "int8", names, tolerance)
    out = [rec("technique", "Quantize the linear layers to int8 for speed and size",
               f"Linear layers take {ev.pct(lin_t)} {what} ({ev.pct(lin_m)} of the MACs). A matrix-vector product "
               f"at small batch reads every weight once per sample, so 4x fewer weight bytes cut both the file and "
               f"the memory traffic, and int8 GEMM kernels use the CPU's dot-product instructions. "
               + (f"{len(ok8)} of {len(names)} linear layers lose at most {tolerance:g} quantized to int8 alone."
                  if ev.probed(sens, "int8") else ""),
               {"linear_time_share": round(lin_t, 4), "linear_mac_share": round(lin_m, 4), "int8_drop": d8,
                "sensitive_layers": bad8},
               {"quantize": {"mode": "dynamic", "exclude": bad8}} if ok8 or not bad8 else None)]
    big = [r for r in rows if r["mac_share"] >= 0.1 and (ev.half_rank_mac_ratio(r) or 1.0) < 0.9]
    okr, badr, dr = ev.split_tolerant(sens, "lowrank", [r["module"] for r in big], tolerance)
    measured = ev.probed(sens, "lowrank")
    candidates = okr if measured else [r["module"] for r in big]
    if candidates:
        ratios = {r["module"]: round(ev.half_rank_mac_ratio(r), 3) for r in big}
        out.append(rec("technique", "Factorize the large linear layers (low rank)",
                       f"Split at half rank, {', '.join(f'{n} runs {ratios[n]:.2f}x its MACs' for n in candidates)}; "
                       f"these layers do {ev.pct(sum(r['mac_share'] for r in big if r['module'] in candidates))} "
                       f"of the model's MACs and each alone loses at most {tolerance:g} at half rank."
                       if measured else
                       f"Split at half rank, {', '.join(f'{n} would run {ratios[n]:.2f}x its MACs' for n in candidates)} "
                       f"(sensitivity not measured).",
                       {"half_rank_mac_ratio": ratios, "lowrank_drop": dr, "sensitive_layers": badr},
                       {"lowrank": {"include": candidates, "rank_by": "sensitivity", "param_ratio": 0.5}}))
    return out


def size_advice(table, facts, sens, tolerance) -> list[dict[str, Any]]:
    """Where the bytes are: the few layers that hold most parameters."""
    rows = sorted((r for r in table["rows"] if r["params"] > 0 and r["kind"] in ("conv", "linear", "depthwise")),
                  key=lambda r: -r["params"])
    heavy, acc = [], 0.0
    for r in rows:
        if acc >= 0.8:
            break
        heavy.append(r)
        acc += r["param_share"]
    if not heavy or acc < 0.5:
        return []
    names = [r["module"] for r in heavy]
    ok4, bad4, d4 = ev.split_tolerant(sens, "int4", names, tolerance)
    okr, _, dr = ev.split_tolerant(sens, "lowrank", names, tolerance)
    ok50, _, d50 = ev.split_tolerant(sens, "prune50", names, tolerance)
    mac_share = sum(r["mac_share"] for r in heavy)
    speed_differs = mac_share < 0.5
    listing = ", ".join(f"{r['module']} ({ev.pct(r['param_share'])})" for r in heavy)
    verb = ("holds", "does") if len(heavy) == 1 else ("hold", "do")
    reason = (f"{listing} {verb[0]} {ev.pct(acc)} of the parameters {'but' if speed_differs else 'and'} {verb[1]} "
              f"{ev.pct(mac_share)} of the MACs: the file size is decided there. ")
    measured = [f"{len(ok)} {what}" for ok, what, probe in (
        (ok4, "with 4-bit weights (16 levels: int4, or clustering to 16 shared values)", "int4"),
        (okr, "at half rank", "lowrank"), (ok50, "with half their channels removed", "prune50"))
        if ev.probed(sens, probe)]
    if measured:
        reason += f"Compressed alone, these many lose at most {tolerance:g}: {'; '.join(measured)}."
    step = {"cluster": {"clusters": 16, "include": ok4}} if ok4 else None
    title = ("Compress the parameter-heavy layers for size (they are not where the time goes)" if speed_differs
             else "Compress the parameter-heavy layers for size")
    return [rec("technique", title, reason,
                {"layers": {r["module"]: {"param_share": round(r["param_share"], 4),
                                          "mac_share": round(r["mac_share"], 4)} for r in heavy},
                 "int4_drop": d4, "lowrank_drop": dr, "prune50_drop": d50}, step)]


def precision_advice(table, sens, tolerance, covered: set[str]) -> list[dict[str, Any]]:
    """Which layers keep float when the rest goes to int8 (from the measured int8 drops); nothing when an
    earlier recommendation already quantizes every probed layer."""
    if not ev.probed(sens, "int8"):
        return []
    names = [e["layer"] for e in sens["layers"]]
    if set(names) <= covered:
        return []
    ok8, bad8, d8 = ev.split_tolerant(sens, "int8", names, tolerance)
    if not d8:
        return []
    worst = max(d8.items(), key=lambda kv: kv[1])
    if bad8:
        reason = (f"Quantized to int8 alone, {', '.join(f'{n} loses {d8[n]:.4f}' for n in bad8)} (over the "
                  f"tolerance {tolerance:g}); keep {'it' if len(bad8) == 1 else 'them'} in float and quantize the "
                  f"other {len(ok8)}.")
    else:
        reason = (f"Every probed layer tolerates int8 alone (worst: {worst[0]}, drop {worst[1]:.4f}, "
                  f"tolerance {tolerance:g}; one evaluation sample is {sens['resolution']:.4f}).")
    return [rec("precision", "int8 everywhere except the sensitive layers" if bad8 else "int8 for every layer",
                reason, {"int8_drop": d8, "sensitive_layers": bad8},
                {"quantize": {"mode": "static", "exclude": bad8}} if ok8 else None)]


def ordered_steps(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One step per technique (the first recommendation's settings win), validated, in the registry's order."""
    from .. import registry

    chosen: dict[str, dict[str, Any]] = {}
    for r in recs:
        step = r.get("step")
        if not step:
            continue
        name, settings = next(iter(step.items()))
        if name in chosen:
            continue
        valid, note = validate(name, settings)
        if valid is not None:
            chosen[name] = valid
        else:
            r["step_note"] = note
    if ("prune" in chosen or "lowrank" in chosen) and _registered("distill"):
        chosen["distill"] = {}
    return [{n: chosen[n]} for n in registry.in_order(chosen)]


def _registered(name: str) -> bool:
    from .. import registry

    return name in registry.TECHNIQUES


def validate(name: str, settings: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The settings if the registered technique accepts them, else None and why."""
    from .. import registry
    from ..config import parse
    from ..errors import ConfigError

    if name not in registry.TECHNIQUES:
        return None, f"technique '{name}' is not registered here yet"
    try:
        parse(registry.module("technique", name).Config, settings, name)
    except ConfigError as e:
        return None, f"not a valid '{name}' step here: {e}"
    return settings, ""
