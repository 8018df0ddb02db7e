"""hurricane.address: the forms of addresses and domain names (the SMTP path
syntax itself is tested in tests/smtpd/test_plain.py)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane import address
from hurricane.smtpd import address as smtpd_address


class BareAddressTests(SynchronousTestCase):
    """bare_address strips types, brackets, display names and case."""

    def test_forms(self) -> None:
        """Each DSN address form reduces to the bare lower-cased address."""
        bare = address.bare_address
        self.assertEqual(bare("rfc822; <Alice@Example.NET>"), "alice@example.net")
        self.assertEqual(bare("rfc822;Pat+ab@example.net"), "pat+ab@example.net")
        self.assertEqual(bare("Pat <pat@example.net>"), "pat@example.net")
        self.assertEqual(bare(" <bob@example.net> "), "bob@example.net")
        self.assertIsNone(bare(""))
        self.assertIsNone(bare(None))


class FormsTests(SynchronousTestCase):
    """fold, domain_of and the one IDNA conversion."""

    def test_fold_and_domain(self) -> None:
        """The suppression key is trimmed and lower-cased; the domain is after the last @."""
        self.assertEqual(address.fold("  Bob@Example.COM "), "bob@example.com")
        self.assertEqual(address.domain_of("a@b@Example.COM"), "example.com")
        self.assertEqual(address.domain_of("Postmaster"), "postmaster")

    def test_a_label(self) -> None:
        """U-labels become lower-case A-labels (IDNA 2008); ASCII is lower-cased as it is."""
        self.assertEqual(address.to_a_label("Bücher.Example."), "xn--bcher-kva.example")
        self.assertEqual(address.to_a_label(" MX.Example.COM "), "mx.example.com")
        # IDNA 2008: ß stays ß (the stdlib's IDNA 2003 codec would map it to "ss")
        self.assertEqual(address.to_a_label("faß.de"), "xn--fa-hia.de")

    def test_a_label_refuses(self) -> None:
        """An empty name or one IDNA 2008 refuses is a ValueError naming it."""
        for bad in ("", " . ", "a\u200db.example", "ex\u00adample.\u2764.com"):
            with self.assertRaises(ValueError):
                address.to_a_label(bad)

    def test_smtpd_names(self) -> None:
        """hurricane.smtpd.address still offers the path parsers: the same functions."""
        self.assertIs(smtpd_address.parse_path, address.parse_path)
        self.assertIs(smtpd_address.Path, address.Path)
        self.assertIs(smtpd_address.parse_params, address.parse_params)
