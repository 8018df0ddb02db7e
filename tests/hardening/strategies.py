"""Hypothesis strategies for returned mail: MIME trees with hostile shapes and charsets."""

from __future__ import annotations

from hypothesis import strategies as st

CHARSETS = [b"utf-8", b"us-ascii", b"iso-8859-1", b"iso-2022-jp", b"utf-7", b"x-unknown",
            b"\xff\xfe", b"", b"utf-16", b"gb18030", b"\"utf-8", b"koi8-r"]
ENCODINGS = [b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uuencode", b"binary",
             b"bogus"]
TYPES = [b"text/plain", b"text/html", b"message/delivery-status", b"message/rfc822",
         b"text/rfc822-headers", b"message/feedback-report", b"application/octet-stream",
         b"message/global-delivery-status", b"text/x-unknown"]
PHRASES = [b"550 5.1.1 <u@x.test>: Recipient address rejected: User unknown",
           b"Final-Recipient: rfc822; u@x.test\r\nAction: failed\r\nStatus: 5.1.1",
           b"Status: 4.2.2\r\nDiagnostic-Code: smtp; 452 mailbox full",
           b"X-Hurricane-Token: hcaaaaaaaaaaadjq7lqfzkwu6hu6tydo@bounces.x.test",
           b"Feedback-Type: abuse", b"Auto-Submitted: auto-replied", b"=?utf-8?B?w6k=?=",
           b"=E9=\r\n=ZZ", b"\x00\xff\xfe", b"begin 644 x\r\nM86)C\r\nend"]

leaf_body = st.lists(st.one_of(st.sampled_from(PHRASES), st.binary(max_size=80)),
                     max_size=6).map(b"\r\n".join)


def _leaf(draw_body: bytes, ctype: bytes, charset: bytes, cte: bytes) -> bytes:
    return (b"Content-Type: " + ctype + b"; charset=" + charset + b"\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + draw_body)


leaf = st.builds(_leaf, leaf_body, st.sampled_from(TYPES), st.sampled_from(CHARSETS),
                 st.sampled_from(ENCODINGS))


def _multipart(parts: list[bytes], boundary: bytes, subtype: bytes, close: bool) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    if close:
        body += b"--" + boundary + b"--\r\n"
    return (b"Content-Type: multipart/" + subtype + b"; report-type=delivery-status; "
            b"boundary=\"" + boundary + b"\"\r\n\r\n" + body)


mime = st.recursive(
    leaf,
    lambda children: st.builds(
        _multipart, st.lists(children, max_size=5),
        st.sampled_from([b"b1", b"b2", b"", b"b1", b"--", b"\xff"]),
        st.sampled_from([b"mixed", b"report", b"alternative", b"x"]), st.booleans()),
    max_leaves=30,
)

returned_mail = st.builds(
    lambda head, tree, eol: (head + tree).replace(b"\r\n", eol),
    st.sampled_from([b"From: MAILER-DAEMON@x.test\r\nSubject: Undelivered Mail\r\n",
                     b"From: postmaster@x.test\r\nSubject: =?x?Q?=FF?=\r\nMIME-Version: 1.0\r\n",
                     b"Subject: Auto: out of office\r\nAuto-Submitted: auto-replied\r\n", b""]),
    mime, st.sampled_from([b"\r\n", b"\n", b"\r"]))
