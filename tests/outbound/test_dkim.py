"""DKIM signing: key choice by From domain, RSA and ed25519, verified with dkimpy."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import DkimKeyConfig
from hurricane.outbound.dkim import DkimSigner
from hurricane.outbound.prepare import normalise_message

MESSAGE = normalise_message(
    b"From: Shop <news@mail.shop.example>\n"
    b"To: alice@example.com\n"
    b"Subject: hello\n"
    b"Message-ID: <1@shop.example>\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"Body line\n"
)

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key_pem(pkcs8: bool = False) -> bytes:
    """The test RSA key as PEM (PKCS#1 or PKCS#8)."""
    fmt = (serialization.PrivateFormat.PKCS8 if pkcs8
           else serialization.PrivateFormat.TraditionalOpenSSL)
    return _RSA.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def rsa_dns_record() -> bytes:
    """The DKIM TXT record of the test RSA key."""
    der = _RSA.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def dnsfunc_for(records: dict[str, bytes]) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc answering from ``records`` (name -> TXT)."""

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        key = name.decode() if isinstance(name, bytes) else name
        return records.get(key.rstrip("."))

    return dnsfunc


class DkimTests(SynchronousTestCase):
    """DkimSigner signs with the From domain's key, verifiably."""

    def key_file(self, data: bytes) -> str:
        fd, path = tempfile.mkstemp(suffix=".key")
        os.write(fd, data)
        os.close(fd)
        self.addCleanup(os.unlink, path)
        return path

    def sign(self, signer: DkimSigner, message: bytes = MESSAGE) -> bytes:
        return self.successResultOf(Deferred.fromCoroutine(signer.sign(message)))

    def test_rsa_signature_verifies(self) -> None:
        """An RSA signature from a parent-domain key verifies with dkimpy (relaxed/relaxed)."""
        signer = DkimSigner.from_config(
            [DkimKeyConfig("shop.example", "s1", self.key_file(rsa_key_pem()))])
        signed = self.sign(signer)
        self.assertTrue(signed.startswith(b"DKIM-Signature:"))
        self.assertIn(b"d=shop.example", signed)
        self.assertIn(b"c=relaxed/relaxed", signed)
        dnsfunc = dnsfunc_for({"s1._domainkey.shop.example": rsa_dns_record()})
        self.assertTrue(dkim.verify(signed, dnsfunc=dnsfunc))

    def test_token_header_after_signing_still_verifies(self) -> None:
        """A header prepended after signing (the VERP token) leaves the signature valid."""
        signer = DkimSigner.from_config(
            [DkimKeyConfig("shop.example", "s1", self.key_file(rsa_key_pem(pkcs8=True)),
                           "rsa-sha256")])
        signed = b"X-Hurricane-Token: h@bounce.example\r\n" + self.sign(signer)
        dnsfunc = dnsfunc_for({"s1._domainkey.shop.example": rsa_dns_record()})
        self.assertTrue(dkim.verify(signed, dnsfunc=dnsfunc))

    def test_ed25519_signature_verifies(self) -> None:
        """An ed25519 key signs with ed25519-sha256, and the signature verifies."""
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        signer = DkimSigner.from_config(
            [DkimKeyConfig("mail.shop.example", "ed", self.key_file(pem))])
        signed = self.sign(signer)
        self.assertIn(b"a=ed25519-sha256", signed)
        dnsfunc = dnsfunc_for({"ed._domainkey.mail.shop.example":
                               b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)})
        self.assertTrue(dkim.verify(signed, dnsfunc=dnsfunc))

    def test_exact_domain_before_parent(self) -> None:
        """The exact From domain's key wins over a parent domain's."""
        path = self.key_file(rsa_key_pem())
        signer = DkimSigner.from_config([DkimKeyConfig("shop.example", "parent", path),
                                         DkimKeyConfig("mail.shop.example", "exact", path)])
        self.assertIn(b"s=exact", self.sign(signer))

    def test_no_key_unchanged(self) -> None:
        """Mail from a domain without a key goes out unsigned and unchanged."""
        signer = DkimSigner.from_config(
            [DkimKeyConfig("other.example", "s1", self.key_file(rsa_key_pem()))])
        self.assertEqual(self.sign(signer), MESSAGE)

    def test_runner_used(self) -> None:
        """Signing goes through the injected runner (a thread pool in production)."""
        calls = []

        async def runner(work: Callable[[], bytes]) -> bytes:
            calls.append(work)
            return work()

        signer = DkimSigner.from_config(
            [DkimKeyConfig("shop.example", "s1", self.key_file(rsa_key_pem()))], runner)
        self.assertTrue(self.sign(signer).startswith(b"DKIM-Signature:"))
        self.assertEqual(len(calls), 1)

    def test_bad_key_file(self) -> None:
        """An unreadable key is refused at load time, naming the file."""
        path = self.key_file(b"not a key")
        e = self.assertRaises(ValueError, DkimSigner.from_config,
                              [DkimKeyConfig("shop.example", "s1", path)])
        self.assertIn(path, str(e))

    def test_algorithm_mismatch(self) -> None:
        """A configured algorithm that does not match the key is refused."""
        e = self.assertRaises(ValueError, DkimSigner.from_config, [
            DkimKeyConfig("shop.example", "s1", self.key_file(rsa_key_pem()), "ed25519-sha256")])
        self.assertIn("rsa-sha256", str(e))
