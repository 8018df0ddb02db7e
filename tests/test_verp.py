"""Tests for the signed VERP codec."""

from __future__ import annotations

import os
import stat
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.verp import (
    DAY_MODULUS,
    MAX_DELIVERY_ID,
    MAX_LOCAL_PART,
    V1_MAX_KEY_AGE_DAYS,
    VerpCodec,
    VerpKey,
    VerpRejection,
    VerpToken,
    check_identifiers,
    load_or_create_keys,
    rotate_keys,
)

DAY = 20_000
KEY0 = VerpKey(0, b"0" * 32, 1.0)
KEY1 = VerpKey(1, b"1" * 32, 2.0)

ident = st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-",
                min_size=1, max_size=15)


def codec(**kw: object) -> VerpCodec:
    args: dict = {"domain": "bounce.example.com", "keys": [KEY0], "today": DAY}
    args.update(kw)
    return VerpCodec(**args)  # type: ignore[arg-type]


class VerpRoundTripTests(SynchronousTestCase):
    """Encoding then decoding gives back what went in."""

    @settings(max_examples=300, deadline=None)
    @given(
        delivery_id=st.integers(min_value=0, max_value=MAX_DELIVERY_ID),
        mailing=st.none() | ident,
        message=st.none() | ident,
    )
    def test_round_trip(self, delivery_id: int, mailing: str | None, message: str | None) -> None:
        """Any delivery id and identifiers within budget decode back, lower-cased."""
        c = codec()
        address = c.encode(delivery_id, mailing, message)
        local = address.split("@")[0]
        self.assertLessEqual(len(local), MAX_LOCAL_PART)
        self.assertEqual(address, address.lower())
        token = c.decode(address)
        self.assertIsInstance(token, VerpToken)
        assert isinstance(token, VerpToken)
        self.assertEqual(token.delivery_id, delivery_id)
        self.assertEqual(token.mailing_id, mailing.lower() if mailing else None)
        self.assertEqual(token.message_id, message.lower() if message else None)
        # MTAs may fold case: the upper-case form decodes the same way.
        self.assertEqual(c.decode(address.upper()), token)

    @settings(max_examples=60, deadline=None)
    @given(delivery_id=st.integers(min_value=0, max_value=2**52), data=st.data())
    def test_every_single_character_change_is_rejected(self, delivery_id: int,
                                                       data: st.DataObject) -> None:
        """Changing any one character of the local part makes the token invalid."""
        c = codec()
        address = c.encode(delivery_id, "spring-sale-26", "ab12-cd34")
        local, domain = address.split("@")
        i = data.draw(st.integers(min_value=0, max_value=len(local) - 1))
        alphabet = "abcdefghijklmnopqrstuvwxyz234567.-019"
        ch = data.draw(st.sampled_from([a for a in alphabet if a != local[i]]))
        forged = local[:i] + ch + local[i + 1:] + "@" + domain
        self.assertIsInstance(c.decode(forged), VerpRejection)

    def test_example_shape(self) -> None:
        """The address has the documented 32-octet head and the identifiers after dots."""
        address = codec().encode(42, "Spring-Sale-26", "AB12-cd34")
        local = address.split("@")[0]
        # "h", format "h" (version 2, one recipient, both identifiers), key 0
        self.assertTrue(local.startswith("hha"))
        self.assertEqual(local[32:], ".spring-sale-26.ab12-cd34")
        self.assertTrue(address.endswith("@bounce.example.com"))

    def test_message_id_only(self) -> None:
        """A message id without a mailing id is not mistaken for a mailing id."""
        c = codec()
        token = c.decode(c.encode(7, None, "m1"))
        assert isinstance(token, VerpToken)
        self.assertEqual((token.mailing_id, token.message_id), (None, "m1"))


#: A key created the day before DAY, so that version 1 tokens can be dated under it.
RECENT = VerpKey(0, b"0" * 32, (DAY - 1) * 86400.0)


class VerpVersionTests(SynchronousTestCase):
    """Version 2 binds the absolute day and the scope; version 1 tokens still verify."""

    @settings(max_examples=200, deadline=None)
    @given(issued=st.integers(min_value=DAY_MODULUS, max_value=60_000),
           later=st.integers(min_value=0, max_value=30),
           wraps=st.integers(min_value=1, max_value=40))
    def test_old_token_never_comes_back(self, issued: int, later: int, wraps: int) -> None:
        """A token shown again a multiple of 1,024 days after its issue never verifies."""
        address = codec(today=issued).encode(5, "m", "x")
        self.assertIsInstance(codec(today=issued + later).decode(address), VerpToken)
        back = codec(today=issued + wraps * DAY_MODULUS + later).decode(address)
        self.assertIsInstance(back, VerpRejection)

    def test_wrapped_tokens_refused(self) -> None:
        """1,024 days on, a version 1 token fails its key's age, a version 2 one its MAC."""
        key = VerpKey(0, b"0" * 32, 0.0)
        c = codec(keys=[key], today=DAY)
        # version 1 signed only the low bits of the day, which match today's
        old = c.encode(5, day=DAY - DAY_MODULUS, version=1)
        self.assertEqual(old.split("@")[0][14:16], c.encode(5, version=1)[14:16])
        self.assertEqual(c.decode(old), VerpRejection(
            "version 1 token under a key too old to date it"))
        self.assertEqual(c.decode(c.encode(5, day=DAY - DAY_MODULUS)),
                         VerpRejection("bad signature"))

    @settings(max_examples=200, deadline=None)
    @given(delivery_id=st.integers(min_value=0, max_value=MAX_DELIVERY_ID),
           mailing=st.none() | ident, message=st.none() | ident,
           age=st.integers(min_value=-1, max_value=30))
    def test_v1_tokens_in_flight_verify(self, delivery_id: int, mailing: str | None,
                                        message: str | None, age: int) -> None:
        """A version 1 token issued before the upgrade decodes as before, dated right."""
        c = codec(keys=[RECENT])
        token = c.decode(c.encode(delivery_id, mailing, message, day=DAY - age, version=1))
        assert isinstance(token, VerpToken)
        self.assertEqual((token.delivery_id, token.version, token.per_message, token.issued),
                         (delivery_id, 1, False, DAY - age))
        self.assertEqual(token.mailing_id, mailing.lower() if mailing else None)

    def test_v1_key_age_limit(self) -> None:
        """Version 1 tokens verify under a key up to 1,022 days old, not older."""
        for key_age, verifies in ((V1_MAX_KEY_AGE_DAYS, True), (V1_MAX_KEY_AGE_DAYS + 1, False)):
            key = VerpKey(0, b"0" * 32, (DAY - key_age) * 86400.0)
            c = codec(keys=[key])
            token = c.decode(c.encode(9, day=DAY - 3, version=1))
            self.assertEqual(isinstance(token, VerpToken), verifies, key_age)
        # version 2 has no such limit
        self.assertIsInstance(codec().decode(codec().encode(9, day=DAY - 3)), VerpToken)

    def test_per_message_scope(self) -> None:
        """A per-message token says so; its scope letter is under the MAC."""
        c = codec()
        shared = c.encode(77, "m", None, per_message=True)
        token = c.decode(shared)
        assert isinstance(token, VerpToken)
        self.assertEqual((token.delivery_id, token.per_message, token.version), (77, True, 2))
        one = c.decode(c.encode(77, "m", None))
        assert isinstance(one, VerpToken)
        self.assertFalse(one.per_message)
        # relabelling a shared token as a one-recipient token breaks the MAC
        self.assertEqual(shared[1], "j")
        self.assertEqual(c.decode("hf" + shared[2:]), VerpRejection("bad signature"))
        self.assertEqual(token.as_dict()["per_message"], True)

    def test_legacy_per_message(self) -> None:
        """Under verp = "per-message", version 1 tokens vouch for the message only."""
        c = codec(keys=[RECENT], legacy_per_message=True)
        old = c.decode(c.encode(3, day=DAY - 2, version=1))
        new = c.decode(c.encode(3))
        assert isinstance(old, VerpToken) and isinstance(new, VerpToken)
        self.assertEqual((old.per_message, new.per_message), (True, False))

    def test_no_v1_per_message(self) -> None:
        """Version 1 had no per-message letter: the codec refuses to invent one."""
        self.assertRaises(ValueError, codec().encode, 1, per_message=True, version=1)
        self.assertRaises(ValueError, codec().encode, 1, version=3)


class VerpRejectionTests(SynchronousTestCase):
    """Decoding refuses anything that is not an authentic, live token."""

    def test_wrong_domain(self) -> None:
        """A token for another bounce domain does not verify here."""
        other = codec(domain="bounce.example.org").encode(5)
        self.assertEqual(codec().decode(other), VerpRejection("wrong domain"))
        # Same local part moved to our domain: the MAC binds the domain.
        moved = other.split("@")[0] + "@bounce.example.com"
        self.assertEqual(codec().decode(moved), VerpRejection("bad signature"))

    def test_trailing_dot_domain(self) -> None:
        """One trailing dot on the domain is accepted, two are not."""
        c = codec()
        address = c.encode(9)
        self.assertIsInstance(c.decode(address + "."), VerpToken)
        self.assertIsInstance(c.decode(address + ".."), VerpRejection)

    def test_expired_and_future(self) -> None:
        """Tokens older than the maximum age, or from the future, are refused."""
        c = codec()
        old = c.encode(1, day=DAY - 31)
        self.assertEqual(c.decode(old), VerpRejection("expired"))
        self.assertIsInstance(c.decode(c.encode(1, day=DAY - 30)), VerpToken)
        self.assertIsInstance(c.decode(c.encode(1, day=DAY + 1)), VerpToken)  # skew
        self.assertIsInstance(c.decode(c.encode(1, day=DAY + 5)), VerpRejection)

    def test_unknown_and_retired_key(self) -> None:
        """A token signed with a key we do not have, or have retired, is refused."""
        signed_by_1 = codec(keys=[KEY0, KEY1]).encode(3)
        self.assertEqual(codec(keys=[KEY0]).decode(signed_by_1), VerpRejection("unknown key"))
        retired = VerpKey(1, KEY1.secret, KEY1.created, retired=True)
        self.assertEqual(codec(keys=[KEY0, retired]).decode(signed_by_1),
                         VerpRejection("unknown key"))

    def test_rotation_signs_with_newest_verifies_all(self) -> None:
        """After rotation new tokens use the newest key and old tokens still verify."""
        old = codec(keys=[KEY0]).encode(11)
        rotated = codec(keys=[KEY0, KEY1])
        new = rotated.encode(11)
        self.assertEqual(new[2], "b")  # key id 1 in base32
        self.assertIsInstance(rotated.decode(old), VerpToken)
        self.assertIsInstance(rotated.decode(new), VerpToken)

    def test_malformed_inputs_never_raise(self) -> None:
        """Garbage of every kind is a rejection, not an exception."""
        c = codec()
        for bad in ["", "@", "a@b@c", "x" * 400, "postmaster@bounce.example.com",
                    '"h"@bounce.example.com', "h" * 70 + "@bounce.example.com",
                    "@bounce.example.com", "<>", None, 5,
                    "hda" + "a" * 29 + "..x@bounce.example.com"]:
            self.assertIsInstance(c.decode(bad), VerpRejection)  # type: ignore[arg-type]

    def test_identifier_rules(self) -> None:
        """Identifiers must use [0-9A-Za-z-] and fit 30 characters together."""
        self.assertIsNone(check_identifiers("a" * 15, "b" * 15))
        self.assertIsNotNone(check_identifiers("a" * 16, "b" * 15))
        self.assertIsNotNone(check_identifiers("a.b", None))
        self.assertIsNotNone(check_identifiers("", None))
        self.assertRaises(ValueError, codec().encode, 1, "a" * 31)
        self.assertRaises(ValueError, codec().encode, MAX_DELIVERY_ID + 1)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=100))
    def test_arbitrary_text_never_raises(self, text: str) -> None:
        """decode() returns a value for any string."""
        result = codec().decode(text + "@bounce.example.com")
        self.assertIsInstance(result, (VerpToken, VerpRejection))


class VerpKeyFileTests(SynchronousTestCase):
    """Keys are generated on first use with mode 0600 and can be rotated."""

    def test_created_private(self) -> None:
        """The first start creates a 256-bit key readable by the owner only."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "verp-keys.json")
        keys = load_or_create_keys(path)
        self.assertEqual(len(keys), 1)
        self.assertEqual(len(keys[0].secret), 32)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(load_or_create_keys(path), keys)

    def test_wide_file_tightened(self) -> None:
        """A keys file readable by others (an older version, a copy) is made 0600 when read."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "verp-keys.json")
        keys = load_or_create_keys(path)
        os.chmod(path, 0o644)
        self.assertEqual(load_or_create_keys(path), keys)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_missing_directory_private(self) -> None:
        """A keys file whose directory is missing gets that directory with mode 0700."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "new", "verp-keys.json")
        old = os.umask(0o022)
        try:
            load_or_create_keys(path)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)

    def test_rotate(self) -> None:
        """Rotation adds a key and optionally retires old ones."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "k.json")
        load_or_create_keys(path)
        new = rotate_keys(path, retire_older_than_days=-1)
        keys = load_or_create_keys(path)
        self.assertEqual([k.key_id for k in keys], [0, new.key_id])
        self.assertTrue(keys[0].retired)
        self.assertFalse(keys[1].retired)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
