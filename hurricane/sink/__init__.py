"""The smart sink: one Twisted process on loopback playing many remote MX hosts.

Run it with ``hurricane sink`` (see ``hurricane sink --help``) or build a
:class:`~hurricane.sink.server.SinkFactory` in a test. Each recipient's
behaviour is chosen from its address by a scenario
(:mod:`hurricane.sink.scenario`); after accepting, the sink can mail an
asynchronous return (:mod:`hurricane.sink.returns`) to the envelope sender at
Hurricane's bounce listener.

Default scenario (no file): the local part's prefix decides.

==================  ==========================================================
``unknown-*@*``     550 5.1.1 user unknown at RCPT
``full-*@*``        552 5.2.2 mailbox full at RCPT
``spam-*@*``        554 5.7.1 after DATA (the message is refused as spam)
``grey-*@*``        451 4.7.1 at RCPT twice (greylisting), then accepted
``ratelimit-*@*``   421 4.7.0 at RCPT once (connection closed), then accepted
``late-*@*``        accepted, then an RFC 3464 DSN (5.1.1) after ``delay``
``delayed-*@*``     accepted, then a "delayed" DSN (4.4.7): stays delivered
``complain-*@*``    accepted, then an ARF complaint (RFC 5965)
``vacation-*@*``    accepted, then an out-of-office auto-reply (RFC 3834)
``unsub-*@*``       accepted, then the one-click unsubscribe POST (RFC 8058) to
                    the message's List-Unsubscribe http link (loopback only)
``unsubmail-*@*``   accepted, then a mail to the List-Unsubscribe mailto address
``drop-*@*``        connection dropped in the middle of DATA, every time
``stall-*@*``       no reply to the final dot for 600 s, then 451
``ndrSTYLE-*@*``    accepted, then a free-text NDR (5.1.1) in the style of
                    STYLE: postfix, exim, sendmail, qmail, exchange, gmail
anything else       accepted
==================  ==========================================================

Scenario file (TOML)::

    seed = 42                 # mixes are repeatable: seed + address decide
    tls = "off"               # "on": offer STARTTLS; "fail": offer it, break the handshake
    hostname = "mx.sink.test"

    [behaviours.soft-full]    # define or override a behaviour
    like = "full"             # start from a built-in (optional)
    code = 452
    status = "4.2.2"
    text = "mailbox full, try later"
    # keys: action (accept|reject|defer|drop|stall), at (rcpt|data), code,
    # status, text ("{rcpt}" is replaced), times (defer/drop: failures before
    # acceptance, 0 = always), then (none|dsn|delayed|ndr|autoreply|arf|
    # unsubscribe|unsubscribe-mailto),
    # style (ndr MTA), delay (s before the return), stall (s),
    # return_status, return_text

    [provider]                # the whole sink plays one provider (issue 19)
    rate_limit = 20           # recipients accepted per second; beyond: 421 4.7.28, close
    complaint_rate = 0.01     # above this share of complaints (complain-*): 554 5.7.1
    complaint_min = 100       # ... once this many recipients were accepted

    [[rules]]                 # first match wins; glob over lower-cased local@domain
    match = "*@full.test"
    behaviour = "soft-full"

    [[rules]]
    match = "*"
    mix = { accept = 90, unknown = 3, late = 2, spam = 2, grey = 2, complain = 1 }

Built-in behaviour names: accept, unknown, full, spam, grey, ratelimit, late,
delayed, complain, vacation, unsubscribe, unsubscribe-mailto, drop, stall,
ndr-postfix, ndr-exim, ndr-sendmail, ndr-qmail, ndr-exchange, ndr-gmail,
ndr-full. When a file has
``[[rules]]``, those replace the default rules (a final ``"*"`` accepting rule
is added if missing).

Within a mix, the choice is a pure function of the seed and the address, so
retries of the same recipient always behave the same way. The sink counts
recipients per behaviour and outcome (accepted, rejected, deferred, dropped,
stalled, split) and returns sent; it can dump accepted messages to a
directory.
"""
