"""Charts as inline SVG, generated on the server (no JavaScript, nothing fetched).

The charts are twisted.web.template ``Tag`` trees, so every label is escaped
by the flattener like the rest of the page. Each bar carries a ``<title>``
(the browser shows it on hover, without script).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.web.template import Tag

from hurricane.outcome import State

__all__ = ["STATE_COLOURS", "STATE_ORDER", "stacked_bars", "horizontal_bars"]

#: The order states are stacked and listed in (texts, as the store counts them).
STATE_ORDER = tuple(s.value for s in (
    State.delivered, State.deferred, State.queued, State.failed, State.bounced,
    State.complained, State.expired, State.suppressed))

#: Each state's colour; keyed by the State member, which a state's text finds too.
STATE_COLOURS: dict[str, str] = {
    State.delivered: "#2e7d32",
    State.deferred: "#f9a825",
    State.queued: "#1e88e5",
    State.failed: "#c62828",
    State.bounced: "#d81b60",
    State.complained: "#6a1b9a",
    State.expired: "#6d4c41",
    State.suppressed: "#9e9e9e",
}


def _svg(width: int, height: int, label: str) -> Tag:
    return Tag("svg")(
        xmlns="http://www.w3.org/2000/svg", width=str(width), height=str(height),
        viewBox=f"0 0 {width} {height}", role="img", **{"aria-label": label,
                                                         "class": "chart"})


def _text(x: float, y: float, content: str, anchor: str = "start", size: int = 11,
          fill: str = "#555") -> Tag:
    return Tag("text")(content, x=f"{x:.1f}", y=f"{y:.1f}", fill=fill,
                       **{"font-size": str(size), "text-anchor": anchor})


def stacked_bars(series: Sequence[tuple[float, dict[str, int]]], start: float, end: float,
                 bucket: float, label: Callable[[float], str], *, title: str,
                 width: int = 900, height: int = 240) -> Tag:
    """A stacked bar per time bucket, one colour per state, with a legend.

    Args:
        series: (bucket start, {state: count}) as ``store.timeseries`` returns.
        start: start of the window (first bucket).
        end: end of the window.
        bucket: bucket width in seconds.
        label: formats a bucket start for the x axis.
        title: accessible name of the chart.
        width: pixel width.
        height: pixel height.

    Returns:
        The ``<svg>`` element.
    """
    left, right, top, bottom = 44, 10, 26, 24
    buckets = max(1, int((end - start + bucket - 1) // bucket))
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(c.values()) for _, c in series), default=0) or 1
    svg = _svg(width, height, title)
    svg(Tag("rect")(x=str(left), y=str(top), width=str(plot_w), height=str(plot_h),
                    fill="#fafafa", stroke="#e0e0e0"))
    for fraction in (0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        svg(Tag("line")(x1=str(left), x2=str(left + plot_w), y1=f"{y:.1f}", y2=f"{y:.1f}",
                        stroke="#e0e0e0"))
        svg(_text(left - 4, y + 4, str(round(peak * fraction)), "end"))
    svg(_text(left - 4, top + plot_h + 4, "0", "end"))
    slot = plot_w / buckets
    bar_w = max(1.0, slot * 0.8)
    for when, counts in series:
        index = int(round((when - start) / bucket))
        if not 0 <= index < buckets:
            continue
        x = left + index * slot + (slot - bar_w) / 2
        y = top + plot_h
        for state in STATE_ORDER:
            n = counts.get(state, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            svg(Tag("rect")(Tag("title")(f"{label(when)}: {n} {state}"),
                            x=f"{x:.1f}", y=f"{y:.1f}", width=f"{bar_w:.1f}",
                            height=f"{max(h, 0.5):.1f}", fill=STATE_COLOURS[state]))
    ticks = min(buckets, 6)
    for i in range(ticks):
        index = round(i * (buckets - 1) / max(ticks - 1, 1))
        x = left + index * slot + slot / 2
        svg(_text(x, height - 6, label(start + index * bucket), "middle"))
    x = left
    for state in STATE_ORDER:
        svg(Tag("rect")(x=f"{x}", y="6", width="10", height="10", fill=STATE_COLOURS[state]))
        svg(_text(x + 14, 15, state))
        x += 14 + 7 * len(state) + 14
    return svg


def horizontal_bars(rows: Sequence[tuple[str, Sequence[tuple[int, str, str]]]], *,
                    title: str, width: int = 900, empty: str = "nothing in this window") -> Tag:
    """One horizontal bar per label, split in coloured segments.

    Args:
        rows: (label, [(value, colour, segment name), ...]) per bar.
        title: accessible name of the chart.
        width: pixel width.
        empty: text shown when there are no rows.

    Returns:
        The ``<svg>`` element.
    """
    row_h, label_w, right = 22, 170, 60
    height = max(1, len(rows)) * row_h + 8
    svg = _svg(width, height, title)
    if not rows:
        svg(_text(8, 18, empty))
        return svg
    peak = max(sum(v for v, _, _ in segs) for _, segs in rows) or 1
    plot_w = width - label_w - right
    for i, (name, segments) in enumerate(rows):
        y = 4 + i * row_h
        svg(_text(label_w - 6, y + 14, name, "end", 12, "#333"))
        x = float(label_w)
        total = 0
        for value, colour, segment in segments:
            if not value:
                continue
            w = plot_w * value / peak
            svg(Tag("rect")(Tag("title")(f"{name}: {value} {segment}"), x=f"{x:.1f}",
                            y=str(y + 2), width=f"{max(w, 1):.1f}", height=str(row_h - 6),
                            fill=colour))
            x += w
            total += value
        svg(_text(x + 6, y + 14, str(total), "start", 11, "#333"))
    return svg
