"""The overview's activity chart as inline SVG, drawn on the server: no chart library, no script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 28
SERIES = (("assigned", "bar-assigned"), ("confirmed", "bar-confirmed"))


def _nice_max(value: int) -> int:
    """The axis top: four grid steps of 1, 2 or 5 times a power of ten, reaching at least ``value``."""
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power * 4 >= value:
                return step * power * 4
        power *= 10


def activity_svg(hours: Sequence[dict[str, Any]]) -> Markup:
    """Paired bars (assigned, confirmed) per hour, a labelled y axis and a label every few hours."""
    count = max(1, len(hours))
    top = _nice_max(max([int(h.get(name, 0)) for h in hours for name, _ in SERIES] or [0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    bar = max(1.0, slot * 0.36)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Tokens assigned and confirmed per hour" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):  # grid lines and y labels at 0, 1/4, ... of the top
        value = top * i // 4  # top is a multiple of 4: whole numbers
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    label_every = max(1, count // 8)
    for index, hour in enumerate(hours):
        x0 = LEFT + index * slot + (slot - 2 * bar) / 2
        for offset, (name, css) in enumerate(SERIES):
            value = int(hour.get(name, 0))
            h = plot_h * value / top
            title = escape(f"{hour.get('hour', '')}:00 UTC: {value} {name}")
            parts.append(
                f'<rect class="{css}" x="{x0 + offset * bar:.1f}" y="{TOP + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{title}</title></rect>'
            )
        if index % label_every == 0 or index == count - 1:
            label = escape(str(hour.get("hour", ""))[11:13] + ":00")
            cx = LEFT + index * slot + slot / 2
            parts.append(
                f'<text class="axis" x="{cx:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>'
            )
    parts.append("</svg>")
    # Every text in it went through escape() above; the rest is numbers this function formatted.
    return Markup("".join(parts))  # noqa: S704
