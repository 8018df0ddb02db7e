"""Tests of hurricane.report.csvexport: one formula-safe cell format for every CSV."""

from __future__ import annotations

import enum
import io

from twisted.trial.unittest import SynchronousTestCase

from hurricane.report.csvexport import CsvWriter, csv_cell
from tests.report.helpers import HOSTILE_TEXTS


class _Colour(str, enum.Enum):
    red = "red"


class CsvCellTests(SynchronousTestCase):
    """csv_cell: the text of one cell."""

    def test_table(self) -> None:
        """Each value becomes its cell text; formula starts get a leading quote."""
        table = [
            (None, ""),
            (True, "true"),
            (False, "false"),
            (0, "0"),
            (550, "550"),
            (1.5, "1.5"),
            (-3, "'-3"),
            ("", ""),
            ("mailbox full", "mailbox full"),
            ("a=b", "a=b"),
            ("'already", "'already"),
            (_Colour.red, "red"),
            (1796522501.703, "1796522501.703"),
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@A1", "'@A1"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("\n=1", "'\n=1"),
            ("   =1", "'   =1"),
            ("\uff1d1", "'\uff1d1"),
        ]
        for value, cell in table:
            self.assertEqual(csv_cell(value), cell, repr(value))
        self.assertEqual(csv_cell(1796522501.703, timestamp=True), "2026-12-06T02:01:41Z")
        self.assertEqual(csv_cell(0, timestamp=True), "1970-01-01T00:00:00Z")
        self.assertEqual(csv_cell(None, timestamp=True), "")

    def test_invisible_prefixes(self) -> None:
        """A formula behind characters a spreadsheet may strip (zero width space, byte
        order mark, NUL, other controls and format characters, odd blanks) is escaped, as
        are the small forms of the signs; invisible characters before plain text are not."""
        for prefix in ("\u200b", "\ufeff", "\x00", "\x01", "\u200d", "\u2060", "\u00a0",
                       "\u3000", "\u2028", "\u200b \ufeff\x00"):
            for sign in ("=", "+", "-", "@", "\uff1d"):
                text = prefix + sign + "1+1"
                self.assertEqual(csv_cell(text), "'" + text, repr(text))
            self.assertEqual(csv_cell(prefix + "mailbox full"), prefix + "mailbox full")
        for sign in ("\ufe66", "\ufe62", "\ufe63", "\ufe6b"):
            self.assertEqual(csv_cell(sign + "1"), "'" + sign + "1", repr(sign))
        self.assertEqual(csv_cell("\u200b"), "\u200b")

    def test_hostile_texts_escaped(self) -> None:
        """Every hostile test value except the plain one comes out quoted."""
        self.assertEqual([csv_cell(text) == "'" + text for text in HOSTILE_TEXTS],
                         [True] * 9 + [False])
        self.assertEqual(csv_cell(HOSTILE_TEXTS[-1]), HOSTILE_TEXTS[-1])


class CsvWriterTests(SynchronousTestCase):
    """CsvWriter: RFC 4180 rows of csv_cell texts."""

    def test_rows(self) -> None:
        """Rows end in CRLF, quote what needs quoting, and pass every cell through csv_cell."""
        out = io.StringIO()
        writer = CsvWriter(out, ("text", "hard", "code"))
        writer.writerows([('=HYPERLINK("x")', True, None), ("a,b\r\nc", False, 550)])
        self.assertEqual(out.getvalue(),
                         'text,hard,code\r\n'
                         '"\'=HYPERLINK(""x"")",true,\r\n'
                         '"a,b\r\nc",false,550\r\n')

    def test_timestamps_iso(self) -> None:
        """Cells of the *_at columns are ISO 8601 UTC to the second (empty when None);
        numbers in other columns stay numbers."""
        out = io.StringIO()
        writer = CsvWriter(out, ("delivery_id", "created_at", "bounced_at", "duration"))
        writer.writerow((7, 1796522501.703, None, 1796522501.5))
        self.assertEqual(out.getvalue(), "delivery_id,created_at,bounced_at,duration\r\n"
                                         "7,2026-12-06T02:01:41Z,,1796522501.5\r\n")

    def test_row_length_checked(self) -> None:
        """A row whose cells do not match the columns is refused (a cell would land under
        another column's name, and format)."""
        writer = CsvWriter(io.StringIO(), ("a", "b_at"))
        self.assertRaises(ValueError, writer.writerow, (1, 2, 3))
