"""Scatter plots as inline SVG text: no JavaScript, no network, no plotting library.

Markers show each trial's status (on the search's Pareto front over its objectives, meeting the
constraints or not, chosen, fp32); a dashed staircase shows the best score reached at each x or lower
in that plane. Each point carries its trial number in ``data-trial`` and a ``<title>`` tooltip; colours are SVG
attributes, so the plot renders the same in any browser or image viewer.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

COLORS = {"front": "#1b9e77", "feasible": "#8fd3bf", "infeasible": "#d95f02", "chosen": "#6a3d9a", "baseline": "#222222"}
LEGEND = {"front": "Pareto front (objectives)", "feasible": "meets constraints", "infeasible": "misses constraints",
          "chosen": "chosen", "baseline": "fp32"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 360, 64, 16, 28, 64


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round numbers covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10 ** e for m in (1, 2, 5)]
    inside = [t for t in ticks if lo <= t <= hi]
    return inside if len(inside) >= 2 else [t for t in ticks if lo / 10 <= t <= hi * 10][:6]


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:.4g}"


def _star(x: float, y: float, r: float) -> str:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        pts.append(f"{x + rad * math.cos(a):.1f},{y + rad * math.sin(a):.1f}")
    return " ".join(pts)


def plane_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats in this plane (x no higher and score no lower), by x."""
    best, out = -math.inf, []
    for p in sorted(points, key=lambda p: (p["x"], -p["y"])):
        if p["y"] > best:
            out.append(p)
            best = p["y"]
    return out


def scatter(plot_id: str, points: list[dict[str, Any]], x_label: str, y_label: str, log_x: bool = False,
            hline: tuple[float, str] | None = None) -> str:
    """An SVG scatter plot. ``points``: dicts with x, y, kind (a COLORS key), trial, label."""
    pts = [p for p in points if p["x"] is not None and p["y"] is not None and (not log_x or p["x"] > 0)]
    if not pts:
        return (f'<svg id="{plot_id}" class="plot" width="{W}" height="{H // 3}" xmlns="http://www.w3.org/2000/svg">'
                f'<text x="10" y="30">no measured trial yet</text></svg>')
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts] + ([hline[0]] if hline else [])
    if log_x:
        lo, hi = min(xs) / 1.3, max(xs) * 1.3
        xt = log_ticks(lo, hi)
        lo, hi = min(lo, xt[0]), max(hi, xt[-1])

        def fx(v: float) -> float:
            return LEFT + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (W - LEFT - RIGHT)
    else:
        low = min(xs) - 0.05 * (max(xs) - min(xs) or max(xs))
        xt = nice_ticks(max(low, 0.0) if min(xs) >= 0 else low, max(xs) * 1.05 + 1e-12)
        lo, hi = xt[0], xt[-1]

        def fx(v: float) -> float:
            return LEFT + (v - lo) / (hi - lo) * (W - LEFT - RIGHT)
    yt = nice_ticks(min(ys) - 0.02 * (max(ys) - min(ys) or 1e-3), max(ys) + 0.02 * (max(ys) - min(ys) or 1e-3))
    ylo, yhi = yt[0], yt[-1]

    def fy(v: float) -> float:
        return TOP + (1 - (v - ylo) / (yhi - ylo)) * (H - TOP - BOTTOM)

    out = [f'<svg id="{plot_id}" class="plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'xmlns="http://www.w3.org/2000/svg" data-points="{len(pts)}" role="img" aria-label="{escape(y_label)} '
           f'against {escape(x_label)}">', f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    for t in xt:
        if lo <= t <= hi:
            x = fx(t)
            out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#e5e5e5"/>'
                       f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" font-size="11" text-anchor="middle">{_fmt(t)}</text>')
    for t in yt:
        y = fy(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t:.4g}</text>')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#333"/>'
               f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#333"/>'
               f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - BOTTOM + 34}" font-size="12" text-anchor="middle">'
               f'{escape(x_label)}</text><text x="14" y="{(TOP + H - BOTTOM) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{escape(y_label)}</text>')
    if hline:
        y = fy(hline[0])
        out.append(f'<line class="limit" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#d95f02" '
                   f'stroke-dasharray="5,4"/><text x="{W - RIGHT - 4}" y="{y - 4:.1f}" font-size="10" '
                   f'text-anchor="end" fill="#d95f02">{escape(hline[1])}</text>')
    stairs = plane_front(pts)
    if len(stairs) > 1:  # the best score reached at each x or lower: a staircase
        corners = [(stairs[0]["x"], stairs[0]["y"])]
        for p in stairs[1:]:
            corners += [(p["x"], corners[-1][1]), (p["x"], p["y"])]
        line = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in corners)
        out.append(f'<polyline class="front-line" points="{line}" fill="none" stroke="{COLORS["front"]}" '
                   f'stroke-width="1.2" stroke-opacity="0.6" stroke-dasharray="3,2"/>')
    order = {"infeasible": 0, "feasible": 1, "baseline": 2, "front": 3, "chosen": 4}
    for p in sorted(pts, key=lambda p: order[p["kind"]]):
        x, y, c = fx(p["x"]), fy(p["y"]), COLORS[p["kind"]]
        tip = f"<title>trial {p['trial']}: {escape(p['label'])} ({escape(x_label)} {p['x']:.4g}, score {p['y']:.4f})</title>"
        attrs = f'class="pt {p["kind"]}" data-trial="{p["trial"]}"'
        if p["kind"] == "chosen":
            out.append(f'<polygon {attrs} points="{_star(x, y, 11)}" fill="{c}" stroke="#000" stroke-width="0.8">{tip}</polygon>')
        elif p["kind"] == "baseline":
            out.append(f'<polygon {attrs} points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} '
                       f'{x - 7:.1f},{y:.1f}" fill="{c}">{tip}</polygon>')
        else:
            out.append(f'<circle {attrs} cx="{x:.1f}" cy="{y:.1f}" r="{6 if p["kind"] == "front" else 5}" fill="{c}" '
                       f'fill-opacity="0.9" stroke="#333" stroke-width="0.5">{tip}</circle>')
    lx = LEFT + 8
    for kind in (k for k in LEGEND if any(p["kind"] == k for p in pts)):
        out.append(f'<rect x="{lx:.0f}" y="6" width="10" height="10" fill="{COLORS[kind]}"/>'
                   f'<text x="{lx + 14:.0f}" y="15" font-size="11">{LEGEND[kind]}</text>')
        lx += 24 + 6.5 * len(LEGEND[kind])
    out.append("</svg>")
    return "".join(out)
