"""Inline SVG charts for the aggregate report: bars, a trend line, a parity dot plot.

Written by hand so the report needs no script, font or stylesheet from anywhere: each
chart is one <svg> element placed in the HTML. A hidden (suppressed) value is drawn as a
hatched stub labelled "suppressed", never as a zero, so a reader cannot mistake one for
the other; in the trend it is a gap in the line with a hatched band over the whole height
and a legend entry, and a scheme a run did not evaluate (ABSENT) is a gap as well.
Labels are escaped; numbers are formatted with thousands separators.
"""

from __future__ import annotations

from html import escape

WIDTH = 860
PALETTE = ("#1f5f8b", "#d9822b", "#3f8f4f", "#8e4585", "#b23b3b", "#5b6770")
HATCH = (
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eceff1"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#9aa5ad" stroke-width="2"/></pattern></defs>'
)


class _Absent:
    """A point a series does not have (the scheme was not evaluated in that run)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


class Under(float):
    """An amount that rounds to 0 but is not 0: shown as "< EUR <unit>", drawn as no bar."""

    def __new__(cls, unit: int):
        obj = super().__new__(cls, 0.0)
        obj.unit = unit
        return obj


def fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "suppressed"
    if isinstance(value, Under):
        return f"< {unit}{value.unit:,}" if unit == "EUR " else f"< {value.unit:,}{unit}"
    text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.2f}"
    return f"{unit}{text}" if unit == "EUR " else f"{text}{unit}"


def _svg(height: int, title: str, body: str) -> str:
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">'
        f"<title>{escape(title)}</title>{HATCH}{body}</svg></figure>"
    )


def _text(x, y, s, anchor="start", cls="lbl") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{cls}">{escape(s)}</text>'


def bar_chart(
    title: str, items: list[tuple[str, float | None]], unit: str = "", label_width: int = 230
) -> str:
    """Horizontal bars, one per (label, value); None is drawn as a hatched 'suppressed' stub."""
    if not items:
        return '<p class="empty">No data.</p>'
    row, top = 22, 8
    height = top + row * len(items) + 10
    plot = WIDTH - label_width - 120
    biggest = max([v for _, v in items if v is not None] + [1])
    parts = []
    for i, (label, value) in enumerate(items):
        y = top + i * row
        parts.append(_text(label_width - 8, y + 14, label, "end"))
        if value is None:
            parts.append(
                f'<rect x="{label_width}" y="{y + 3}" width="40" height="14" fill="url(#hatch)" '
                'class="suppressed"/>'
            )
            parts.append(_text(label_width + 46, y + 14, "suppressed", cls="muted"))
            continue
        w = max(plot * value / biggest, 1 if value else 0)
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{w:.1f}" height="14" '
            f'fill="{PALETTE[0]}" class="bar"/>'
        )
        parts.append(_text(label_width + w + 6, y + 14, fmt(value, unit), cls="val"))
    return _svg(height, title, "".join(parts))


def stacked_bar(title: str, parts_in: list[tuple[str, float | None]]) -> str:
    """One horizontal bar split into shares, with a legend; hidden parts listed as such."""
    shown = [(lbl, v) for lbl, v in parts_in if v]
    total = sum(v for _, v in shown) or 1
    x, plot, parts = 20.0, WIDTH - 40, []
    for i, (label, value) in enumerate(shown):
        w = plot * value / total
        parts.append(
            f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="26" '
            f'fill="{PALETTE[i % len(PALETTE)]}" class="bar"><title>{escape(label)}: '
            f"{fmt(value)}</title></rect>"
        )
        x += w
    for i, (label, value) in enumerate(parts_in):
        col, line = i % 3, i // 3
        lx, ly = 20 + col * 280, 58 + line * 20
        fill = PALETTE[[lbl for lbl, _ in shown].index(label) % len(PALETTE)] if value else "none"
        swatch = "url(#hatch)" if value is None else fill
        parts.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{swatch}"/>')
        parts.append(_text(lx + 18, ly, f"{label}: {fmt(value)}"))
    height = 70 + 20 * ((len(parts_in) - 1) // 3 + 1)
    return _svg(height, title, "".join(parts))


def line_chart(title: str, x_labels: list[str], series: dict[str, list]) -> str:
    """A trend over runs: one line per series. A hidden point (None) breaks the line and its
    run gets a hatched band labelled "suppressed", never a mark on the zero line; an ABSENT
    point (not evaluated) only breaks the line. Both have a legend entry when present."""
    if not x_labels:
        return '<p class="empty">No runs.</p>'
    left, right, top, bottom = 70, 180, 16, 60
    height = 280
    pw, ph = WIDTH - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None and v is not ABSENT]
    biggest = max(values + [1])
    step = pw / max(len(x_labels) - 1, 1)

    def xy(i, v):
        return left + i * step, top + ph - ph * v / biggest

    parts = [
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>',
        _text(left - 6, top + 4, fmt(biggest), "end", "muted"),
        _text(left - 6, top + ph, "0", "end", "muted"),
    ]
    for i, label in enumerate(x_labels):
        x = left + i * step
        parts.append(_text(x, top + ph + 18, label, "middle", "muted"))
    hidden = sorted({i for vs in series.values() for i, v in enumerate(vs) if v is None})
    for i in hidden:
        x = left + i * step
        names = ", ".join(n for n, vs in series.items() if vs[i] is None)
        parts.append(
            f'<rect x="{x - 7:.1f}" y="{top}" width="14" height="{ph}" fill="url(#hatch)" '
            f'class="suppressed"><title>suppressed: {escape(names)}</title></rect>'
        )
        parts.append(_text(x, top - 4, "suppressed", "middle", "muted"))
    for k, (name, vs) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        segment: list[str] = []
        for i, v in enumerate(vs):
            if v is None or v is ABSENT:
                parts.append(_polyline(segment, colour))
                segment = []
                continue
            x, y = xy(i, v)
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        parts.append(_polyline(segment, colour))
        ly = top + 14 + 18 * k
        parts.append(
            f'<rect x="{left + pw + 16}" y="{ly - 10}" width="12" height="12" fill="{colour}"/>'
        )
        parts.append(_text(left + pw + 34, ly, name))
    extra = [("suppressed (small numbers)", 'fill="url(#hatch)"')] if hidden else []
    if any(v is ABSENT for vs in series.values() for v in vs):
        extra.append(("gap: scheme not evaluated", 'fill="none" stroke="#8a949c"'))
    for j, (label, fill) in enumerate(extra):
        ly = top + 14 + 18 * (len(series) + j)
        parts.append(f'<rect x="{left + pw + 16}" y="{ly - 10}" width="12" height="12" {fill}/>')
        parts.append(_text(left + pw + 34, ly, label))
    return _svg(height, title, "".join(parts))


def _polyline(points: list[str], colour: str) -> str:
    if len(points) < 2:
        return ""
    return (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
        'stroke-width="2" class="line"/>'
    )


def parity_chart(
    title: str, items: list[tuple[str, float | None, str, str | None]], low: float, high: float
) -> str:
    """Coverage ratio per group as dots on a log-free 0..2 scale, the accepted band shaded.

    items: (label, ratio or None when its figures are hidden, state, note) with state one of
    "ok", "flag" (a gap), "high" (above the band), "unassessed" (note says why).
    """
    if not items:
        return '<p class="empty">No groups.</p>'
    label_width, row, top = 200, 22, 26
    plot = WIDTH - label_width - 250
    height = top + row * len(items) + 12
    scale = 2.0

    def x(r):
        return label_width + plot * min(r, scale) / scale

    parts = [
        f'<rect x="{x(low):.1f}" y="{top - 6}" width="{x(high) - x(low):.1f}" '
        f'height="{row * len(items) + 6}" fill="#e3f0e6" class="band"/>',
        f'<line x1="{x(1):.1f}" y1="{top - 10}" x2="{x(1):.1f}" y2="{top + row * len(items)}" '
        'class="axis"/>',
        _text(x(1), top - 12, "parity 1.0", "middle", "muted"),
        _text(x(low), top - 12, f"{low:.2f}", "middle", "muted"),
        _text(x(high), top - 12, f"{high:.2f}", "middle", "muted"),
    ]
    for i, (label, ratio, state, note_text) in enumerate(items):
        y = top + i * row + 8
        parts.append(_text(label_width - 8, y + 4, label, "end"))
        if state == "unassessed":
            why = note_text or "not assessed"
            parts.append(_text(label_width + 4, y + 4, why, cls="muted"))
            continue
        colour = {"flag": "#b23b3b", "high": PALETTE[1]}.get(state, PALETTE[2])
        note = {"flag": " FLAGGED", "high": " above"}.get(state, "")
        cls = "flag" if state == "flag" else "val"
        if ratio is None:
            parts.append(
                _text(
                    label_width + plot + 10,
                    y + 4,
                    f"ratio suppressed{note}",
                    cls=cls,
                )
            )
            continue
        parts.append(f'<circle cx="{x(ratio):.1f}" cy="{y}" r="5" fill="{colour}" class="dot"/>')
        parts.append(_text(label_width + plot + 10, y + 4, f"{ratio:.2f}{note}", cls=cls))
    return _svg(height, title, "".join(parts))
