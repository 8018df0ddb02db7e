"""hurricane.report.charts: buckets from the data's span, round ticks, full-width SVG."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.template import flattenString

from hurricane.report import charts
from hurricane.report.charts import (
    BAR_STEPS,
    MAX_BARS,
    nice_ceiling,
    range_text,
    stacked_bars,
    time_axis,
    time_ticks,
)
from hurricane.report.html import CSS

T = 1_796_522_501.7  # an instant that is on no round boundary


def svg_text(tag: object) -> str:
    """A chart flattened to text."""
    out: list[bytes] = []
    flattenString(None, tag).addCallback(out.append)
    return out[0].decode("utf-8")


class TimeAxisTests(SynchronousTestCase):
    """time_axis: the smallest round bucket that gives at most MAX_BARS bars."""

    def test_spans(self) -> None:
        """From a 14-second run to a year: the bucket and how many bars."""
        table = [
            (14, 0.2, 71),  # the demo: several bars, not one
            (5, 0.1, 51),
            (0, 0.1, 1),
            (59, 0.5, 119),
            (3600, 60, 61),
            (86400, 900, 97),
            (7 * 86400, 7200, 85),
            (30 * 86400, 43200, 61),
        ]
        for span, bucket, bars in table:
            axis = time_axis(T, T + span)
            self.assertEqual((axis.bucket, axis.bars), (bucket, bars), span)

    def test_every_span_between_bounds(self) -> None:
        """Every span from a second to 60 days gives 30 to 120 bars (fewer only where the
        smallest bucket already fits), aligned to whole buckets, covering both ends."""
        span = 1.0
        while span < 60 * 86400:
            axis = time_axis(T, T + span)
            self.assertLessEqual(axis.bars, MAX_BARS, span)
            if axis.bucket > BAR_STEPS[0]:
                self.assertGreaterEqual(axis.bars, 30, span)
            self.assertLessEqual(axis.start, T)
            self.assertGreater(axis.end, T + span)
            self.assertAlmostEqual(axis.start / axis.bucket, round(axis.start / axis.bucket),
                                   places=4)
            span *= 1.37


class TicksTests(SynchronousTestCase):
    """time_ticks: evenly spaced at round times."""

    def test_even_and_round(self) -> None:
        """Ticks are multiples of one round step, evenly spaced, at most 8, inside the axis."""
        for span in (14, 300, 3600, 86400, 7 * 86400):
            axis = time_axis(T, T + span)
            ticks, step = time_ticks(axis.start, axis.end)
            self.assertLessEqual(len(ticks), 8)
            self.assertGreaterEqual(len(ticks), 2, span)
            self.assertEqual({round(b - a, 6) for a, b in zip(ticks, ticks[1:], strict=False)},
                             {step})
            self.assertTrue(all(t % step == 0 for t in ticks))
            self.assertTrue(all(axis.start <= t <= axis.end for t in ticks))

    def test_daily_ticks_at_midnight(self) -> None:
        """Day steps fall on UTC midnight."""
        ticks, step = time_ticks(T, T + 6 * 86400)
        self.assertEqual(step, 86400)
        self.assertTrue(all(t % 86400 == 0 for t in ticks))


class ValueAxisTests(SynchronousTestCase):
    """nice_ceiling: a round top and whole steps."""

    def test_table(self) -> None:
        """The top is the next round number and the grid step divides it."""
        table = [(0, 1, 1), (1, 1, 1), (3, 3, 1), (7, 8, 2), (26, 30, 10), (53, 60, 20),
                 (787, 800, 200), (1001, 1500, 500)]
        for value, top, step in table:
            self.assertEqual(nice_ceiling(value), (top, step), value)

    def test_range_text(self) -> None:
        """Ranges of round durations read as people write them."""
        self.assertEqual(range_text(1, 2), "1\u20132 s")
        self.assertEqual(range_text(30, 60), "30 s\u20131 min")
        self.assertEqual(range_text(3600, 7200), "1\u20132 h")


class StackedBarsTests(SynchronousTestCase):
    """stacked_bars: a bar per non-empty bucket, full width, ticks in the axis."""

    def test_a_short_run_has_several_bars(self) -> None:
        """Fourteen seconds of data draw a bar per non-empty bucket, ticks evenly spaced."""
        axis = time_axis(T, T + 14)
        series = [(axis.start + i * axis.bucket, {"delivered": 3, "failed": 1})
                  for i in range(axis.bars)]
        text = svg_text(stacked_bars(series, axis, title="Outcomes over time"))
        self.assertEqual(text.count('class="bar"'), 2 * axis.bars)
        xs = [float(x) for x in re.findall(r'<line x1="([\d.]+)" x2="\1" y1="2[0-9.]+" '
                                           r'y2="2[0-9.]+" stroke="#999"', text)]
        self.assertGreaterEqual(len(xs), 4)
        gaps = {round(b - a, 0) for a, b in zip(xs, xs[1:], strict=False)}
        self.assertLessEqual(max(gaps) - min(gaps), 1.0)  # rounding of positions only
        self.assertIn("0.2 s per bar", text)

    def test_full_width(self) -> None:
        """The chart's viewBox is a card's width and the CSS stretches it to the card."""
        text = svg_text(charts.horizontal_bars([], title="x"))
        self.assertIn(f'viewBox="0 0 {charts.CHART_WIDTH} ', text)
        self.assertIn("svg.chart{width:100%;height:auto", CSS)
