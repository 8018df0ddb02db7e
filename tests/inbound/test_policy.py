"""BouncePolicy: the table of RCPT forms the bounce receiver must refuse or accept."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.inbound.policy import (
    RELAY_DENIED,
    UNKNOWN_RECIPIENT,
    BouncePolicy,
    BounceRecipient,
    RecipientKind,
)
from hurricane.smtpd.address import parse_path
from hurricane.smtpd.reply import ReplyError
from hurricane.verp import VerpCodec, VerpKey

DOMAIN = "bounces.example.com"
TODAY = 20000


def make_codec(domain: str = DOMAIN, secret: bytes = b"k" * 32, today: int = TODAY) -> VerpCodec:
    """A codec with one fixed key and a fixed day."""
    return VerpCodec(domain, [VerpKey(0, secret, 0.0)], max_age_days=30, today=today)


CODEC = make_codec()
GOOD = CODEC.encode(42, "spring-sale", "m1")
GOOD_LOCAL = GOOD.split("@")[0]
FORGED = make_codec(secret=b"x" * 32).encode(42, "spring-sale", "m1")
EXPIRED = CODEC.encode(42, day=TODAY - 31)
_FLIP = "a" if GOOD_LOCAL[-5] != "a" else "b"
TAMPERED = GOOD_LOCAL[:-5] + _FLIP + GOOD_LOCAL[-4:] + "@" + DOMAIN

#: (RCPT argument, expected): a BounceRecipient kind, or the refusal Reply,
#: or an int for a syntax refusal code from the parser.
TABLE: list[tuple[str, object]] = [
    # must accept
    (f"<{GOOD}>", RecipientKind.verp),
    (f"<{GOOD.upper()}>", RecipientKind.verp),
    (f"<{GOOD_LOCAL}@{DOMAIN.upper()}>", RecipientKind.verp),
    (f"<postmaster@{DOMAIN}>", RecipientKind.postmaster),
    (f"<PostMaster@{DOMAIN}>", RecipientKind.postmaster),
    ("<postmaster>", RecipientKind.postmaster),
    ("<POSTMASTER>", RecipientKind.postmaster),
    (f"<abuse@{DOMAIN}>", RecipientKind.feedback),
    (f"<FBL@{DOMAIN}>", RecipientKind.feedback),
    # unknown, forged, expired: one and the same 550 5.1.1
    (f"<{FORGED}>", UNKNOWN_RECIPIENT),
    (f"<{EXPIRED}>", UNKNOWN_RECIPIENT),
    (f"<{TAMPERED}>", UNKNOWN_RECIPIENT),
    (f"<root@{DOMAIN}>", UNKNOWN_RECIPIENT),
    (f"<h{'a' * 31}@{DOMAIN}>", UNKNOWN_RECIPIENT),
    (f"<{GOOD_LOCAL}.extra@{DOMAIN}>", UNKNOWN_RECIPIENT),
    ("<nobody>", UNKNOWN_RECIPIENT),
    # relay attempts: 550 5.7.1
    ("<user@example.com>", RELAY_DENIED),
    (f"<{GOOD_LOCAL}@example.com>", RELAY_DENIED),
    (f"<postmaster@sub.{DOMAIN}>", RELAY_DENIED),
    (f"<postmaster@{DOMAIN}.evil.example>", RELAY_DENIED),
    (f"<@{DOMAIN}:user@example.com>", RELAY_DENIED),
    (f"<@a.example,@b.example:{GOOD}>", RELAY_DENIED),
    (f"<user%example.com@{DOMAIN}>", RELAY_DENIED),
    (f"<example.com!user@{DOMAIN}>", RELAY_DENIED),
    ("<example.com!user>", RELAY_DENIED),
    (f'<"user@example.com"@{DOMAIN}>', RELAY_DENIED),
    (f'<"postmaster"@{DOMAIN}>', RELAY_DENIED),
    ("<user@[192.0.2.1]>", RELAY_DENIED),
    ("<postmaster@[IPv6:2001:db8::1]>", RELAY_DENIED),
    ("<>", RELAY_DENIED),
    # malformed: refused by the parser (553 5.1.3)
    (f"<user@{DOMAIN}.>", 553),
    (f"<user@@{DOMAIN}>", 553),
    (f"<{GOOD}", 553),
]


class BouncePolicyTableTests(SynchronousTestCase):
    def test_table(self) -> None:
        """Every RCPT form gets exactly the expected verdict."""
        policy = BouncePolicy(CODEC, DOMAIN, ("abuse", "fbl"))
        for text, expected in TABLE:
            try:
                path, _ = parse_path(text, "recipient")
            except ReplyError as e:
                self.assertEqual(e.reply.code, expected, text)
                continue
            verdict = policy.check_recipient(path)
            if isinstance(expected, RecipientKind):
                self.assertIsInstance(verdict, BounceRecipient, text)
                self.assertEqual(verdict.kind, expected, text)
            else:
                self.assertEqual(verdict, expected, text)

    def test_verp_carries_delivery_id(self) -> None:
        """An accepted VERP recipient carries the verified delivery id; postmaster none."""
        policy = BouncePolicy(CODEC, DOMAIN)
        verdict = policy.check_recipient(parse_path(f"<{GOOD}>", "recipient")[0])
        self.assertEqual(verdict.delivery_id, 42)
        self.assertEqual(verdict.token.mailing_id, "spring-sale")
        verdict = policy.check_recipient(parse_path("<postmaster>", "recipient")[0])
        self.assertIsNone(verdict.delivery_id)

    def test_forged_and_unknown_share_the_reply(self) -> None:
        """A forged token is refused with the very same text as an unknown user."""
        policy = BouncePolicy(CODEC, DOMAIN)
        forged = policy.check_recipient(parse_path(f"<{FORGED}>", "recipient")[0])
        unknown = policy.check_recipient(parse_path(f"<nobody@{DOMAIN}>", "recipient")[0])
        self.assertEqual(str(forged), str(unknown))
        self.assertEqual((forged.code, forged.status), (550, "5.1.1"))
