"""The analysis as self-contained SVG (no scripts, fonts or external files): sensitivity per layer, time
per op type, and parameters/MACs/time per layer. :func:`svg_plots` returns the SVG strings by name;
the CLI writes them next to ``analysis.json`` and the HTML report embeds them inline.
"""
from __future__ import annotations

from html import escape
from typing import Any

COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")
ROW_PX, BAR_AREA_PX, CHAR_PX = 16, 420, 6.6


def grouped_bars(title: str, categories: list[str], series: list[tuple[str, list[float | None]]], x_label: str,
                 fmt: str = "{:.3f}", marker: tuple[str, float] | None = None) -> str:
    """Horizontal grouped bars: one group per category, one bar per series; ``None`` is drawn as 'n/a'.

    Negative values (a probe that scored higher than the baseline) are drawn as zero-length bars with
    their value printed. ``marker`` is a labelled vertical line (e.g. the tolerance).
    """
    label_px = int(max([len(c) for c in categories] + [8]) * CHAR_PX) + 16
    group_px = ROW_PX * len(series) + 8
    top, legend_px = 40, 18 * ((len(series) + 3) // 4)
    width = label_px + BAR_AREA_PX + 80
    height = top + group_px * max(1, len(categories)) + 40 + legend_px
    values = [v for _, vs in series for v in vs if v is not None]
    vmax = max([v for v in values if v > 0] + ([marker[1]] if marker else []) + [1e-12])
    scale = BAR_AREA_PX / vmax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<title>{escape(title)}</title>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, cat in enumerate(categories):
        y0 = top + i * group_px
        out.append(f'<text x="{label_px - 8}" y="{y0 + group_px / 2 + 4:.0f}" text-anchor="end">{escape(cat)}</text>')
        for j, (_, vs) in enumerate(series):
            v = vs[i]
            y = y0 + j * ROW_PX + 2
            if v is None:
                out.append(f'<text x="{label_px + 4}" y="{y + 11}" fill="#999">n/a</text>')
                continue
            w = max(0.0, v) * scale
            out.append(f'<rect x="{label_px}" y="{y}" width="{w:.1f}" height="{ROW_PX - 3}" '
                       f'fill="{COLORS[j % len(COLORS)]}"><title>{escape(series[j][0])}: {fmt.format(v)}</title></rect>')
            out.append(f'<text x="{label_px + w + 4:.1f}" y="{y + 11}" fill="#333">{escape(fmt.format(v))}</text>')
    axis_y = top + group_px * max(1, len(categories))
    out.append(f'<line x1="{label_px}" y1="{top - 4}" x2="{label_px}" y2="{axis_y}" stroke="#333"/>')
    out.append(f'<line x1="{label_px}" y1="{axis_y}" x2="{label_px + BAR_AREA_PX}" y2="{axis_y}" stroke="#333"/>')
    for k in range(5):
        x = label_px + BAR_AREA_PX * k / 4
        out.append(f'<text x="{x:.0f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">'
                   f'{escape(fmt.format(vmax * k / 4))}</text>')
    out.append(f'<text x="{label_px + BAR_AREA_PX / 2:.0f}" y="{axis_y + 30}" text-anchor="middle">{escape(x_label)}</text>')
    if marker:
        x = label_px + marker[1] * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#c00" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{top - 6}" fill="#c00">{escape(marker[0])}</text>')
    ly = axis_y + 44
    for j, (name, _) in enumerate(series):
        x = label_px + (j % 4) * 130
        y = ly + (j // 4) * 18
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLORS[j % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 14}" y="{y + 9}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def sensitivity_svg(result: dict[str, Any]) -> str | None:
    sens = result.get("sensitivity") or {}
    if "layers" not in sens or not sens["layers"]:
        return None
    probes = list(sens["probes"])
    layers = [e["layer"] for e in sens["layers"]]
    series = [(sens["probes"][p]["label"], [e["results"][p].get("drop") for e in sens["layers"]]) for p in probes]
    tolerance = (result.get("config") or {}).get("tolerance")
    return grouped_bars(f"Score drop with only one layer compressed ({sens['samples']} samples)", layers, series,
                        "score drop (baseline minus score; n/a: not applicable to the layer)", "{:.4f}",
                        ("tolerance", tolerance) if tolerance else None)


def op_time_svg(result: dict[str, Any]) -> str | None:
    prof = result.get("profile") or {}
    batches = prof.get("batches") or {}
    if not batches:
        return None
    ops: list[str] = []
    for b in batches.values():
        ops += [o["op"] for o in b["ops"] if o["op"] not in ops]
    series = []
    for bs, b in sorted(batches.items(), key=lambda kv: int(kv[0])):
        share = {o["op"]: o["share"] for o in b["ops"]}
        series.append((f"batch {bs} ({b['kernel_us_per_run']:.0f} µs kernels/run)", [share.get(op, 0.0) for op in ops]))
    return grouped_bars(f"Time per op type on {prof.get('runtime', 'ONNX Runtime')}", ops, series,
                        "share of the summed kernel time", "{:.1%}")


def layers_svg(result: dict[str, Any]) -> str | None:
    table = result.get("layers") or {}
    rows = [r for r in table.get("rows", []) if r["params"] or r["macs"]]
    if not rows:
        return None
    series = [("parameters", [r["param_share"] for r in rows]), ("MACs", [r["mac_share"] for r in rows])]
    batches = (result.get("profile") or {}).get("batches") or {}
    if "1" in batches:
        times = batches["1"]["layers"]
        total = sum(times.values()) or 1.0
        series.append(("time at batch 1", [times.get(r["module"], 0.0) / total for r in rows]))
    return grouped_bars("Where size and time go (layers with weights or MACs)", [r["name"] for r in rows], series,
                        "share of the model total", "{:.1%}")


def svg_plots(result: dict[str, Any]) -> dict[str, str]:
    """Name -> SVG text for each plot the analysis has data for (``sensitivity``, ``op_time``, ``layers``)."""
    plots = {"sensitivity": sensitivity_svg(result), "op_time": op_time_svg(result), "layers": layers_svg(result)}
    return {name: svg for name, svg in plots.items() if svg is not None}
