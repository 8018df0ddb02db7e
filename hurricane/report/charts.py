"""Charts as inline SVG, generated on the server (no JavaScript, nothing fetched).

The charts are twisted.web.template ``Tag`` trees, so every label is escaped
by the flattener like the rest of the page. Each bar carries a ``<title>``
(the browser shows it on hover, without script).

Every chart is drawn in a viewBox about as wide as a report card at
1400 px and scales to the card's full width (``svg.chart`` in the CSS).
Time charts pick their bucket from the span of the data, not from the
window asked for (:func:`time_axis`): a 14-second run gets 1-second bars,
a week 2-hour ones, 30 to 120 bars whenever the span allows; their ticks
are evenly spaced at round times (:func:`time_ticks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.web.template import Tag

from hurricane.outcome import State

__all__ = ["BAR_STEPS", "NICE_STEPS", "STATE_COLOURS", "STATE_ORDER", "TimeAxis",
           "duration_text", "histogram", "horizontal_bars", "nice_ceiling", "range_text",
           "stacked_bars", "time_axis", "time_ticks"]

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


#: Round durations (seconds) for ticks, from a second to a week.
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)
#: Round durations for bars: the ticks' and a few below a second, so a burst
#: of a few seconds (a demo) still shows its shape.
BAR_STEPS = (0.1, 0.2, 0.5, *NICE_STEPS)
#: Most bars of a time chart: the smallest round bucket that keeps under it
#: wins, so a span gives between 120 / 3.5 (the widest ratio of two steps)
#: and 120 bars, fewer only when 0.1-second bars already fit.
MAX_BARS = 120
#: The viewBox width of every chart: a card's inner width at 1400 px.
CHART_WIDTH = 1160


@dataclass(frozen=True)
class TimeAxis:
    """The x axis of a time chart: [start, end) cut into ``bucket``-second bars."""

    start: float
    end: float
    bucket: float

    @property
    def bars(self) -> int:
        """How many bars fit between start and end."""
        return max(1, round((self.end - self.start) / self.bucket))


def time_axis(first: float, last: float) -> TimeAxis:
    """The axis for data from ``first`` to ``last``: a round bucket, aligned bars.

    Args:
        first: the earliest time to show.
        last: the latest time to show (>= first).

    Returns:
        Bars aligned to multiples of the bucket (UTC), covering both ends.
    """
    last = max(first, last)
    step: float
    for step in BAR_STEPS:
        if math.floor(last / step) - math.floor(first / step) + 1 <= MAX_BARS:
            break
    else:
        step = NICE_STEPS[-1] * math.ceil((last - first) / (MAX_BARS * NICE_STEPS[-1]) + 1)
    # Whole multiples of the step (0.1 s steps: multiples of a tenth, not
    # float sums of 0.1) so that bars line up with the ticks.
    start = math.floor(first / step) * step
    end = (math.floor(last / step) + 1) * step
    return TimeAxis(round(float(start), 3), round(float(end), 3), float(step))


def time_ticks(start: float, end: float, most: int = 8) -> tuple[list[float], float]:
    """Evenly spaced round times in [start, end], and their step.

    The step is the smallest of :data:`NICE_STEPS` that gives at most
    ``most`` ticks; ticks are its multiples (so daily ticks fall on UTC
    midnight).
    """
    span = max(end - start, 1.0)
    step = next((s for s in NICE_STEPS if span / s <= most), None)
    if step is None:
        step = NICE_STEPS[-1] * math.ceil(span / (most * NICE_STEPS[-1]))
    first = math.ceil(start / step) * step
    return [float(t) for t in range(int(first), int(end) + 1, int(step))], float(step)


def tick_format(step: float, span: float) -> str:
    """The strftime format of tick labels ``step`` apart over ``span`` seconds."""
    if step >= 86400:
        return "%m-%d"
    clock = "%H:%M:%S" if step < 60 else "%H:%M"
    return "%m-%d " + clock if span > 86400 else clock


def _round_duration(seconds: float) -> tuple[str, str]:
    """A round duration as (number, unit): ``("15", "min")``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}", unit
    return f"{seconds:g}", "s"


def duration_text(seconds: float) -> str:
    """A round duration as a short label: ``1 s``, ``15 min``, ``6 h``, ``1 d``."""
    number, unit = _round_duration(seconds)
    return f"{number} {unit}"


def range_text(low: float, high: float) -> str:
    """A range of round durations: ``1\u20132 s``, ``30 s\u20131 min``."""
    (a, unit_a), (b, unit_b) = _round_duration(low), _round_duration(high)
    if unit_a == unit_b:
        return f"{a}\u2013{b} {unit_b}"
    return f"{a} {unit_a}\u2013{b} {unit_b}"


#: Round tops of a value axis (times a power of ten) and how many steps split them.
_TOPS = ((1, 5), (1.5, 3), (2, 4), (2.5, 5), (3, 3), (4, 4), (5, 5), (6, 3), (8, 4), (10, 5))


def nice_ceiling(value: float) -> tuple[float, float]:
    """A round top for a value axis at or above ``value``, and its grid step.

    Tops are 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten, split in
    3 to 5 whole steps, so the grid labels are numbers people read at once
    and a bar never fills less than about two thirds of the height.
    """
    value = max(value, 1.0)
    power = 10 ** math.floor(math.log10(value))
    factor, parts = next((f, p) for f, p in _TOPS if value <= f * power)
    top = factor * power
    return float(top), float(max(1.0, top / parts))


def _svg(width: int, height: int, label: str) -> Tag:
    return Tag("svg")(
        xmlns="http://www.w3.org/2000/svg", width=str(width), height=str(height),
        viewBox=f"0 0 {width} {height}", role="img", **{"aria-label": label,
                                                         "class": "chart"})


def _text(x: float, y: float, content: str, anchor: str = "start", size: int = 11,
          fill: str = "#555") -> Tag:
    return Tag("text")(content, x=f"{x:.1f}", y=f"{y:.1f}", fill=fill,
                       **{"font-size": str(size), "text-anchor": anchor})


def _legend(svg: Tag, names: Sequence[tuple[str, str]], x: float) -> None:
    """Colour swatches and names in a row at the top."""
    for name, colour in names:
        svg(Tag("rect")(x=f"{x}", y="6", width="10", height="10", fill=colour))
        svg(_text(x + 14, 15, name))
        x += 14 + 7 * len(name) + 14


def _value_axis(svg: Tag, peak: int, left: float, top: float, plot_w: float,
                plot_h: float) -> float:
    """The plot area with grid lines at round values; returns the axis' top value."""
    ceiling, step = nice_ceiling(peak)
    svg(Tag("rect")(x=str(left), y=str(top), width=f"{plot_w:.1f}", height=f"{plot_h:.1f}",
                    fill="#fafafa", stroke="#e0e0e0"))
    value = 0.0
    while value <= ceiling + 1e-9:
        y = top + plot_h * (1 - value / ceiling)
        if value:
            svg(Tag("line")(x1=str(left), x2=f"{left + plot_w:.1f}", y1=f"{y:.1f}",
                            y2=f"{y:.1f}", stroke="#e8e8e8"))
        svg(_text(left - 4, y + 4, f"{value:g}", "end"))
        value += step
    return ceiling


def stacked_bars(series: Sequence[tuple[float, dict[str, int]]], axis: TimeAxis, *,
                 title: str, width: int = CHART_WIDTH, height: int = 260) -> Tag:
    """A stacked bar per time bucket, one colour per state, with a legend.

    Args:
        series: (bucket start, {state: count}) on the axis' buckets.
        axis: the buckets (:func:`time_axis`).
        title: accessible name of the chart.
        width: viewBox width.
        height: viewBox height.

    Returns:
        The ``<svg>`` element; each bar segment is a ``rect`` of class ``bar``.
    """
    left, right, top, bottom = 48, 12, 26, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(c.values()) for _, c in series), default=0) or 1
    svg = _svg(width, height, title)
    peak = int(_value_axis(svg, peak, left, top, plot_w, plot_h))
    span = axis.end - axis.start
    slot = plot_w / axis.bars
    bar_w = max(1.0, slot * 0.8) if slot >= 3 else slot
    fmt = ("%H:%M:%S" if axis.bucket < 60 else "%Y-%m-%d %H:%M")
    for when, counts in series:
        index = int(round((when - axis.start) / axis.bucket))
        if not 0 <= index < axis.bars:
            continue
        x = left + index * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for state in STATE_ORDER:
            n = counts.get(state, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            at = time.strftime(fmt, time.gmtime(when)) + (
                f".{round(when % 1 * 10) % 10}" if axis.bucket < 1 else "")
            svg(Tag("rect")(Tag("title")(f"{at}: {n} {state}"),
                            x=f"{x:.2f}", y=f"{y:.1f}", width=f"{bar_w:.2f}",
                            height=f"{max(h, 0.5):.1f}", fill=STATE_COLOURS[state],
                            **{"class": "bar"}))
    ticks, step = time_ticks(axis.start, axis.end)
    fmt = tick_format(step, span)
    for t in ticks:
        x = left + plot_w * (t - axis.start) / span
        svg(Tag("line")(x1=f"{x:.1f}", x2=f"{x:.1f}", y1=f"{top + plot_h:.1f}",
                        y2=f"{top + plot_h + 4:.1f}", stroke="#999"))
        # A label at either end of the axis is anchored inside the chart.
        anchor = ("start" if x - left < 30 else "end" if left + plot_w - x < 30
                  else "middle")
        svg(_text(x, height - 6, time.strftime(fmt, time.gmtime(t)), anchor))
    _legend(svg, [(s, STATE_COLOURS[s]) for s in STATE_ORDER], left)
    svg(_text(width - right, 15, f"{duration_text(axis.bucket)} per bar (UTC)", "end"))
    return svg


def histogram(buckets: Sequence[tuple[str, Sequence[tuple[int, str, str]]]], *, title: str,
              width: int = CHART_WIDTH, height: int = 220,
              legend: Sequence[tuple[str, str]] = (),
              boundaries: Sequence[str] = ()) -> Tag:
    """Stacked vertical bars over labelled buckets (a distribution).

    Args:
        buckets: (label, [(value, colour, segment name), ...]) per bucket, in order.
        title: accessible name of the chart.
        width: viewBox width.
        height: viewBox height.
        legend: (name, colour) swatches to show at the top.
        boundaries: labels of the edges between buckets (``len(buckets) - 1``),
            drawn between the bars instead of a label under each (ranges of a
            log scale are too wide to sit under narrow bars).

    Returns:
        The ``<svg>`` element; each bar segment is a ``rect`` of class ``bar``.
    """
    left, right, top, bottom = 48, 12, 26, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(v for v, _, _ in segs) for _, segs in buckets), default=0) or 1
    svg = _svg(width, height, title)
    peak = int(_value_axis(svg, peak, left, top, plot_w, plot_h))
    slot = plot_w / max(1, len(buckets))
    bar_w = slot * 0.8
    for i, (label, segments) in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for value, colour, name in segments:
            if not value:
                continue
            h = plot_h * value / peak
            y -= h
            svg(Tag("rect")(Tag("title")(f"{label}: {value} {name}"), x=f"{x:.1f}",
                            y=f"{y:.1f}", width=f"{bar_w:.1f}", height=f"{max(h, 0.5):.1f}",
                            fill=colour, **{"class": "bar"}))
        if not boundaries:
            svg(_text(left + i * slot + slot / 2, height - 6, label, "middle", 10))
    for i, label in enumerate(boundaries[:len(buckets) - 1]):
        x = left + (i + 1) * slot
        svg(Tag("line")(x1=f"{x:.1f}", x2=f"{x:.1f}", y1=f"{top + plot_h:.1f}",
                        y2=f"{top + plot_h + 4:.1f}", stroke="#999"))
        svg(_text(x, height - 6, label, "middle", 10))
    _legend(svg, legend, left)
    return svg


def horizontal_bars(rows: Sequence[tuple[str, Sequence[tuple[int, str, str]]]], *,
                    title: str, width: int = CHART_WIDTH,
                    empty: str = "nothing in this window") -> Tag:
    """One horizontal bar per label, split in coloured segments.

    Args:
        rows: (label, [(value, colour, segment name), ...]) per bar.
        title: accessible name of the chart.
        width: viewBox width.
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
