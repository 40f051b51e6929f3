"""Small line charts as inline SVG, drawn on the server: no script, no CDN, readable without
colour (the target is a labelled dashed line, the values are listed for screen readers)."""

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 16, 28


def line_chart(
    points: Sequence[tuple[str, float | None]],
    *,
    title: str,
    target: float | None = None,
    target_label: str = "target",
    unit: str = "",
    scale: float = 1.0,
    y_min: float | None = None,
    y_max: float | None = None,
    higher_is_better: bool = True,
) -> Markup:
    """`points` are (label, value) in order; a None value leaves a gap. Values are multiplied
    by `scale` for display (0.06 with scale 100 and unit '%' reads 6 %)."""
    shown = [(label, None if v is None else v * scale) for label, v in points]
    values = [v for _, v in shown if v is not None]
    goal = None if target is None else target * scale
    low = y_min if y_min is not None else min([*values, goal or 0, 0])
    high = y_max if y_max is not None else max([*values, goal or 0, 1])
    if high <= low:
        high = low + 1
    span_x = max(1, len(shown) - 1)

    def x(index: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * index / span_x

    def y(value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - (value - low) / (high - low))

    segments: list[list[str]] = []
    current: list[str] = []
    for index, (_, value) in enumerate(shown):
        if value is None:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(f"{x(index):.1f},{y(value):.1f}")
    if current:
        segments.append(current)
    lines = [
        f'<polyline class="series" fill="none" points="{" ".join(s)}"/>'
        for s in segments
        if len(s) > 1
    ]
    dots = [
        f'<circle class="series-dot" cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5"/>'
        for i, (_, v) in enumerate(shown)
        if v is not None
    ]
    parts = [
        f'<figure class="chart-figure"><figcaption>{escape(title)}</figcaption>',
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{_id(title)}-title {_id(title)}-desc">',
        f'<title id="{_id(title)}-title">{escape(title)}</title>',
        f'<desc id="{_id(title)}-desc">{escape(_describe(shown, goal, unit, target_label))}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>',
        _tick(LEFT - 6, y(high), _fmt(high, unit)),
        _tick(LEFT - 6, y(low), _fmt(low, unit)),
    ]
    if goal is not None:
        met = "above" if higher_is_better else "below"
        parts += [
            f'<line class="target" data-target="{goal:g}" x1="{LEFT}" y1="{y(goal):.1f}" '
            f'x2="{WIDTH - RIGHT}" y2="{y(goal):.1f}"/>',
            f'<text class="target-label" x="{WIDTH - RIGHT}" y="{y(goal) - 4:.1f}" '
            f'text-anchor="end">{escape(target_label)} {_fmt(goal, unit)} ({met} is good)</text>',
        ]
    if shown:
        parts += [
            f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">{escape(shown[0][0])}</text>',
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
            f"{escape(shown[-1][0])}</text>",
        ]
    parts += [*lines, *dots, "</svg></figure>"]
    # Every text in it went through escape(); the rest are numbers this function wrote.
    return Markup("".join(parts))  # noqa: S704


def _tick(x: float, y: float, text: str) -> str:
    return f'<text class="tick" x="{x}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'


def _fmt(value: float, unit: str) -> str:
    return f"{value:.0f}{unit}" if abs(value) >= 10 else f"{value:.1f}{unit}"


def _id(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())[:40]


def _describe(
    shown: Sequence[tuple[str, float | None]], goal: float | None, unit: str, label: str
) -> str:
    known = [(day, v) for day, v in shown if v is not None]
    if not known:
        return "No data yet."
    first, last = known[0], known[-1]
    text = f"From {_fmt(first[1], unit)} on {first[0]} to {_fmt(last[1], unit)} on {last[0]}."
    return text + (f" The {label} is {_fmt(goal, unit)}." if goal is not None else "")
