"""The analysis as rich tables for the terminal: layers, profile, sensitivity, advice."""
from __future__ import annotations

from typing import Any


def _num(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x else "-"


def layers_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = result["layers"]
    batches = (result.get("profile") or {}).get("batches") or {}
    times = batches.get("1", {}).get("layers", {})
    time_total = sum(times.values()) or 1.0
    t = Table(title=f"layers of {result['model']} ({result['task']}), batch 1")
    for col in ("layer", "type", "shape", "params", "params %", "MACs", "MACs %", "time %", "activation"):
        t.add_column(col, justify="left" if col in ("layer", "type", "shape") else "right")
    for r in table["rows"]:
        t.add_row(r["name"], r["type"], r["detail"], _num(r["params"]), _pct(r["param_share"]), _num(r["macs"]),
                  _pct(r["mac_share"]), _pct(times.get(r["module"], 0.0) / time_total) if times else "",
                  f"{r['activation_bytes'] / 1024:.1f} KiB")
    tot = table["totals"]
    t.add_section()
    t.add_row("total", f"{tot['layers']} rows", "", _num(tot["params"]), "", _num(tot["macs"]), "",
              _pct(1 - times.get("(runtime-inserted)", 0.0) / time_total) if times else "",
              f"{tot['activation_bytes'] / 1024:.1f} KiB")
    t.caption = (f"{tot['param_bytes'] / 1e6:.3f} MB of parameters; largest layer output "
                 f"{tot['peak_layer_activation_bytes'] / 1024:.1f} KiB per sample; MACs count convolutions and matrix "
                 f"products" + ("; time % from the ONNX Runtime profile (the rest: runtime-inserted reorders)"
                                if times else ""))
    return t


def profile_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    prof = result.get("profile") or {}
    batches = prof.get("batches") or {}
    keys = sorted(batches, key=int)
    t = Table(title=f"time per op type on {prof['runtime']} ({prof['threads']} threads, median per run)")
    t.add_column("op")
    for k in keys:
        t.add_column(f"b{k} µs", justify="right")
        t.add_column(f"b{k} share", justify="right")
    ops: list[str] = []
    for k in keys:
        ops += [o["op"] for o in batches[k]["ops"] if o["op"] not in ops]
    for op in ops:
        cells = []
        for k in keys:
            o = next((o for o in batches[k]["ops"] if o["op"] == op), None)
            cells += [f"{o['us_per_run']:.1f}", _pct(o["share"])] if o else ["-", "-"]
        t.add_row(op, *cells)
    t.add_section()
    t.add_row("kernels / run", *[c for k in keys for c in (f"{batches[k]['kernel_us_per_run']:.1f}", "")])
    t.add_row("whole run", *[c for k in keys for c in (f"{batches[k]['run_us_median']:.1f}", "")])
    return t


def top_nodes(result: dict[str, Any], n: int = 8) -> Any:
    from rich.table import Table

    batches = result["profile"]["batches"]
    key = min(batches, key=int)
    t = Table(title=f"slowest nodes at batch {key}")
    for col in ("node", "op", "layer", "µs", "share", "output"):
        t.add_column(col, justify="right" if col in ("µs", "share") else "left")
    for node in batches[key]["nodes"][:n]:
        t.add_row(node["node"][-48:], node["op"], node["layer"] if node["layer"] is not None else "(runtime)",
                  f"{node['us_per_run']:.1f}", _pct(node["share"]), str(node["output_shape"] or ""))
    return t


def sensitivity_table(result: dict[str, Any]) -> tuple[Any, list[str]]:
    from rich.table import Table

    sens = result["sensitivity"]
    tol = result["config"]["tolerance"]
    t = Table(title=f"score drop with only that layer compressed ({sens['samples']} samples, baseline "
                    f"{sens['baseline_score']:.4f}; green: drop <= {tol:g})")
    t.add_column("layer")
    probes = list(sens["probes"])
    for p in probes:
        t.add_column(sens["probes"][p]["label"], justify="right")
    reasons: dict[str, str] = {}
    for entry in sens["layers"]:
        cells = []
        for p in probes:
            res = entry["results"][p]
            if "drop" in res:
                d = res["drop"]
                color = "green" if d <= tol else "yellow" if d <= 4 * tol else "red"
                cells.append(f"[{color}]{d:+.4f}[/{color}]")
            else:
                why = res.get("skipped") or f"error: {res.get('error')}"
                mark = reasons.setdefault(why, f"n/a{len(reasons) + 1}")
                cells.append(f"[dim]{mark}[/dim]")
        t.add_row(entry["layer"], *cells)
    notes = [f"{mark}: {why}" for why, mark in reasons.items()]
    notes += [f"{sens['probes'][p]['label']}: {sens['probes'][p]['note']}" for p in probes]
    return t, notes


def print_analysis(con: Any, result: dict[str, Any]) -> None:
    con.print(layers_table(result))
    prof = result.get("profile") or {}
    if prof.get("batches"):
        con.print(profile_table(result))
        con.print(top_nodes(result))
        for p in prof["batches"][min(prof["batches"], key=int)]["channel_padding"]:
            con.print(f"[yellow]note:[/yellow] ONNX Runtime ran '{p['layer']}' with {p['runtime_channels']} "
                      f"channels for its {p['out_channels']} (blocked layout).")
    else:
        con.print(f"[red]profile:[/red] {prof.get('error') or prof.get('skipped')}")
    sens = result.get("sensitivity") or {}
    if sens.get("layers"):
        table, notes = sensitivity_table(result)
        con.print(table)
        for note in notes:
            con.print(f"[dim]  {note}[/dim]")
    else:
        con.print(f"[yellow]sensitivity:[/yellow] {sens.get('skipped', 'no layer with weights to probe')}")
    advice = result["advice"]
    con.print(f"\n[bold]advice[/bold] — {advice['summary']}")
    for i, r in enumerate(advice["recommendations"], 1):
        con.print(f"[bold]{i}. [{r['category']}] {r['title']}[/bold]")
        con.print(f"   {r['reason']}", highlight=False)
        if r.get("step"):
            con.print(f"   [cyan]step:[/cyan] {r['step']}", highlight=False)
        if r.get("step_note"):
            con.print(f"   [dim]{r['step_note']}[/dim]", highlight=False)
    if advice["steps"]:
        con.print(f"[bold]recipe steps to start a search from:[/bold] {advice['steps']}", highlight=False)
