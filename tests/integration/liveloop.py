"""The live loop: real receiving MTAs write the bounces, Hurricane records them.

Hurricane delivers real messages (through its own queue, client and VERP
return paths) to throwaway instances of real MTAs on loopback. Each MTA
accepts the message and then fails it for a known cause, so that *the MTA's
own bounce code* writes the DSN and mails it to the VERP return path, where
Hurricane's bounce listener takes it and records the outcome; or the MTA
refuses during Hurricane's own SMTP session (recorded as ``failed``). The
expected answer of every case follows from its cause and
docs/bounce-reasons.md, never from the text the MTA happened to write.

Pieces:

* :class:`Sandbox`: a mount namespace (``unshare -m``) in which each MTA
  runs with its own ``/etc/hosts`` and ``/etc/nsswitch.conf`` (``hosts:
  files``: a name lookup never leaves the machine, an unknown name fails at
  once) and the system users an MTA expects (``Debian-exim``), without
  touching the machine's own files;
* :class:`PostfixMta` (``postfix -c DIR``: its own config_directory and
  queue_directory) and :class:`EximMta` (``exim -C FILE -bd -oX PORT``, its
  own spool), each set up for the causes in :data:`CASES`;
* the next hops that refuse: extra ``smtpd`` services of the same Postfix
  with their own restrictions (Postfix's own refusal texts), and Hurricane's
  smart sink (``hurricane sink``'s scenarios) for the texts of other servers;
* :func:`run_loop`: Hurricane (the real service tree, :class:`hurricane.demo.Rig`)
  submits one message per case, waits until every case is final, and
  returns one :class:`Outcome` per case.

Used by tests/integration/test_liveloop.py (the suite) and bench/liveloop.py
(the score table). Needs root (an MTA's own users, a mount namespace).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.process import free_port, wait_port

#: The bounce domain of the Hurricane side (hurricane.demo.Rig's).
BOUNCE_DOMAIN = "bounces.demo.test"


@dataclass(frozen=True)
class Case:
    """One cause produced by one MTA, with the answer docs/bounce-reasons.md gives for it.

    Args:
        mta: "postfix" or "exim".
        cause: a short name for the cause.
        recipient: the address Hurricane delivers to (its domain routes it).
        reason: the reason that must be recorded.
        hard: whether the address must count as hard (suppressed).
        state: the delivery's final state: ``bounced`` (a DSN came back
            after the MTA accepted), ``failed`` (refused during our session).
        how: how the MTA is made to fail, for the table.
    """

    mta: str
    cause: str
    recipient: str
    reason: str
    hard: bool
    state: str
    how: str


@dataclass(frozen=True)
class Outcome:
    """What Hurricane recorded for one case."""

    case: Case
    state: str | None
    reason: str | None
    hard: bool | None
    status: str | None
    text: str

    @property
    def right(self) -> bool:
        """Reason, hard and state all as expected."""
        return (self.state == self.case.state and self.reason == self.case.reason
                and bool(self.hard) == self.case.hard)


def wait_listening(port: int, timeout: float) -> bool:
    """Whether 127.0.0.1:port accepts within ``timeout`` seconds (tests.process.wait_port)."""
    try:
        wait_port(port, timeout)
    except AssertionError:
        return False
    return True


def why_not_root() -> str | None:
    """None when this process can run the MTAs (root, unshare), else why not."""
    if os.geteuid() != 0:
        return "the live loop runs MTAs with their own users and a mount namespace: needs root"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None


# ---------------------------------------------------------------------------
# The sandbox: a mount namespace with private name service files


class Sandbox:
    """Files bind-mounted over /etc inside a private mount namespace.

    Every MTA is started through :meth:`command`, so it and every process
    it forks see these files; the machine's own /etc is never written.
    """

    def __init__(self, root: str, users: Iterable[tuple[str, int, int]] = (),
                 libs: Iterable[str] = ()) -> None:
        self.dir = os.path.join(root, "sandbox")
        os.makedirs(self.dir)
        self.mounts: list[tuple[str, str]] = []
        with open("/etc/passwd") as fp:
            passwd = fp.read()
        with open("/etc/group") as fp:
            group = fp.read()
        for name, uid, gid in users:
            if f"\n{name}:" not in "\n" + passwd:
                passwd += f"{name}:x:{uid}:{gid}:{name}:/nonexistent:/usr/sbin/nologin\n"
            if f"\n{name}:" not in "\n" + group:
                group += f"{name}:x:{gid}:\n"
        self._file("passwd", passwd, "/etc/passwd")
        self._file("group", group, "/etc/group")
        # Names resolve from the hosts file only: no query leaves the machine, and a
        # name that is not there fails at once (the host-unknown cause).
        self._file("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\n"
                   "hosts: files\nnetworks: files\nservices: files\nprotocols: files\n",
                   "/etc/nsswitch.conf")
        self._file("hosts", "127.0.0.1 localhost mx.postfix.test mx.exim.test\n",
                   "/etc/hosts")
        libs = [d for d in libs if os.path.isdir(d)]
        if libs:
            # An MTA unpacked from its package (not installed) finds its libraries
            # through a private ld.so cache: Exim re-executes itself for every
            # delivery with a cleared environment, so LD_LIBRARY_PATH would not do.
            conf = os.path.join(self.dir, "ld.so.conf")
            with open(conf, "w") as fp:
                fp.write("include /etc/ld.so.conf\n" + "".join(d + "\n" for d in libs))
            cache = os.path.join(self.dir, "ld.so.cache")
            subprocess.run(["ldconfig", "-C", cache, "-f", conf], check=True,
                           capture_output=True, timeout=60)
            self.mounts.append((cache, "/etc/ld.so.cache"))

    def _file(self, name: str, text: str, target: str) -> None:
        path = os.path.join(self.dir, name)
        with open(path, "w") as fp:
            fp.write(text)
        os.chmod(path, 0o644)
        self.mounts.append((path, target))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside a new mount namespace with the files mounted."""
        script = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in self.mounts)
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                script + ' && exec "$@"', "sandbox", *argv]


# ---------------------------------------------------------------------------
# Postfix

#: The delivery program behind Postfix's aliases (local(8) pipes to it): it
#: answers as procmail, maildrop or a site script would, by the case name.
#: sysexits: 67 EX_NOUSER, 70 EX_SOFTWARE, 73 EX_CANTCREAT, 74 EX_IOERR, 77 EX_NOPERM.
#: A leading RFC 3463 code in the output is taken as the status by Postfix's pipe_command.
DELIVERY_PROGRAM = r"""#!/bin/sh
cat >/dev/null
case "$1" in
  xnouser)   echo "5.1.1 <$2>: user unknown"; exit 67 ;;
  xfull)     echo "5.2.2 mailbox full: quota exceeded"; exit 73 ;;
  xquota)    echo "maildrop: maildir over quota."; exit 73 ;;
  xspam)     echo "5.7.1 message refused: spam score 12.3 is over the threshold of 5.0"; exit 77 ;;
  xmoved)    echo "5.1.6 mailbox has moved, write to newhome@elsewhere.example"; exit 67 ;;
  xprocmail) echo "procmail: Error while writing to \"/var/mail/$1\""; exit 74 ;;
  xcrash)    exit 70 ;;
esac
exit 0
"""


class PostfixMta:
    """A throwaway Postfix (``postfix -c DIR``) on 127.0.0.1, set up for the Postfix cases.

    Args:
        root: a directory of its own (removed by the caller).
        sandbox: where it runs.
        port: its main smtpd's port (Hurricane's route for the Postfix domains).
        bounce_port: Hurricane's bounce listener (where the DSNs go).
        sink_port: the smart sink (next hops with other servers' texts).
    """

    name = "postfix"

    def __init__(self, root: str, sandbox: Sandbox, port: int, bounce_port: int,
                 sink_port: int) -> None:
        self.dir = os.path.join(root, "postfix")
        self.sandbox = sandbox
        self.port = port
        self.etc = os.path.join(self.dir, "etc")
        self.hop_ports = {"rcpt": free_port(), "sender": free_port(), "size": free_port()}
        self.dead_port = free_port()      # nothing listens there: connection refused
        for sub in ("etc", "queue", "data", "vmail", "bin"):
            os.makedirs(os.path.join(self.dir, sub))
        for d in (root, self.dir, os.path.join(self.dir, "bin")):
            os.chmod(d, 0o755)    # the postfix user and nobody must reach them
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        shutil.chown(os.path.join(self.dir, "vmail"), "nobody", "nogroup")
        self.program = os.path.join(self.dir, "bin", "deliver")
        with open(self.program, "w") as fp:
            fp.write(DELIVERY_PROGRAM)
        os.chmod(self.program, 0o755)
        # a mailbox already at its size limit: the next message makes it exceed
        vfull = os.path.join(self.dir, "vmail", "vfull")
        with open(vfull, "w") as fp:
            fp.write("From x\n" + "x" * 4000 + "\n")
        shutil.chown(vfull, "nobody", "nogroup")
        hop = "smtp:[127.0.0.1]:%d"
        # (texthash: the postmap format, "key value", not the aliases file's "key: value")
        self._table("aliases", [f"{c} \"|{self.program} {c} {c}@local.postfix.test\""
                                for c in ("xnouser", "xfull", "xquota", "xspam", "xmoved",
                                          "xprocmail", "xcrash")])
        self._table("relocated", ["moved@local.postfix.test newhome@elsewhere.example"])
        self._table("vmailbox", ["vfull@vmail.postfix.test vfull",
                                 "vok@vmail.postfix.test vok"])
        self._table("sender_access", [])
        self._table("transport", [
            "ghost@vmail.postfix.test " + hop % self.hop_ports["rcpt"],
            "relay.postfix.test " + hop % self.hop_ports["rcpt"],
            "sender.postfix.test " + hop % self.hop_ports["sender"],
            "size.postfix.test " + hop % self.hop_ports["size"],
            "dead.postfix.test " + hop % self.dead_port,
            "nohost.postfix.test smtp:[mx.nowhere.invalid]",
            *(f"{d}.pf-hop.test " + hop % sink_port for d in SINK_DOMAINS),
            f"{BOUNCE_DOMAIN} " + hop % bounce_port,
        ])
        with open(os.path.join(self.etc, "main.cf"), "w") as fp:
            fp.write("compatibility_level = 3.6\n")
        shutil.copy("/etc/postfix/master.cf", os.path.join(self.etc, "master.cf"))
        t = "texthash:" + self.etc + "/"
        self.postconf("-e", *(f"{k}={v}" for k, v in {
            "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"),
            "maillog_file": os.path.join(self.dir, "maillog"),
            "maillog_file_prefixes": self.dir,
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": "mx.postfix.test", "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "local.postfix.test",
            # accept every local part: local(8) then bounces the unknown ones
            "local_recipient_maps": "",
            "alias_maps": t + "aliases", "alias_database": "",
            "relocated_maps": t + "relocated",
            "virtual_mailbox_domains": "vmail.postfix.test",
            "virtual_mailbox_base": os.path.join(self.dir, "vmail"),
            "virtual_mailbox_maps": t + "vmailbox",
            "virtual_uid_maps": "static:65534", "virtual_gid_maps": "static:65534",
            "virtual_mailbox_limit": "4096", "message_size_limit": "4096",
            "transport_maps": t + "transport",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # accept, then bounce (the DSN is what this loop is about)
            "smtpd_reject_unlisted_recipient": "no",
            # one delivery attempt, then the bounce: the queue lifetime in seconds
            "maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0",
            "queue_run_delay": "1s", "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s", "delay_warning_time": "0",
            "smtp_host_lookup": "native", "smtp_dns_support_level": "disabled",
            "smtp_connect_timeout": "2s",
            "smtp_tls_security_level": "none", "smtpd_tls_security_level": "none",
            "default_privs": "nobody",
            "biff": "no",
        }.items()))
        self.postconf("-M#", "smtp/inet")
        self.postconf("-M", f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd")
        # Next hops with Postfix's own refusals (each its own smtpd, its own restrictions)
        self._smtpd(self.hop_ports["rcpt"],
                    # 550 5.1.1 User unknown in virtual mailbox table; 554 5.7.1 Relay
                    # access denied (the client is not in this smtpd's mynetworks)
                    "-o mynetworks=192.0.2.1/32 -o smtpd_reject_unlisted_recipient=yes "
                    "-o smtpd_relay_restrictions=reject_unauth_destination")
        self._smtpd(self.hop_ports["sender"],
                    # 553 5.7.1 Sender address rejected, at MAIL FROM (no delayed reject)
                    "-o smtpd_delay_reject=no -o smtpd_sender_restrictions=reject "
                    "-o reject_code=553")
        self._smtpd(self.hop_ports["size"], "-o message_size_limit=1024")
        self.postconf("-F", "*/*/chroot = n")

    def _table(self, name: str, lines: list[str]) -> None:
        with open(os.path.join(self.etc, name), "w") as fp:
            fp.write("".join(line + "\n" for line in lines))

    def _smtpd(self, port: int, options: str) -> None:
        self.postconf("-M", f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd "
                      + options)

    def postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", self.etc, *args], check=True, capture_output=True,
                       timeout=30)

    def start(self) -> None:
        """``postfix start`` in the sandbox; wait for the listeners."""
        out = subprocess.run(self.sandbox.command(["postfix", "-c", self.etc, "start"]),
                             capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"postfix start failed: {out.stdout}{out.stderr}{self.log()}")
        for p in (self.port, *self.hop_ports.values()):
            if not wait_listening(p, 20):
                raise RuntimeError(f"postfix did not listen on {p}: {self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "maillog")) as fp:
                return fp.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """``postfix stop``."""
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------
# Exim


def find_exim() -> tuple[str, list[str]] | None:
    """The Exim binary and the library directories it needs, or None.

    ``$HURRICANE_EXIM`` names the binary (e.g. one unpacked from Debian's
    exim4-daemon-light by tests/integration/unpack-exim.sh, which installs
    beside Postfix where the package itself would replace it); else ``exim4``
    or ``exim`` on the PATH. An unpacked binary finds its libraries beside it.
    """
    path = os.environ.get("HURRICANE_EXIM") or shutil.which("exim4") or shutil.which("exim")
    if not path or not os.access(path, os.X_OK):
        return None
    libs = []
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    lib = os.path.join(top, "usr", "lib", "x86_64-linux-gnu")
    if os.environ.get("HURRICANE_EXIM") and os.path.isdir(lib):
        libs.append(lib)
    return path, libs


EXIM_CONF = r"""
primary_hostname = mx.exim.test
qualify_domain = exim.test
exim_path = {exim}
keep_environment =
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
daemon_smtp_ports = {port}
local_interfaces = <; 127.0.0.1
host_lookup =
rfc1413_hosts =
never_users = root
domainlist local_domains = local.exim.test : sync.exim.test
acl_smtp_rcpt = acl_rcpt
message_size_limit = 50M
# give up on a temporary failure after seconds, not days
ignore_bounce_errors_after = 0s
timeout_frozen_after = 1m

begin acl
acl_rcpt:
  # refused during the sender's own session: Exim's answer for a user no router takes
  deny domains = sync.exim.test
       !verify = recipient
  # everything else is accepted, to fail later: the bounce is what this loop is about
  accept hosts = 127.0.0.1
  deny

begin routers
to_bounces:
  driver = accept
  domains = {bounce_domain}
  transport = to_bounces
hop:
  driver = accept
  domains = *.ex-hop.test
  transport = to_sink
dead:
  driver = accept
  domains = dead.exim.test
  transport = to_dead
nxdomain:
  # the domain's host does not resolve: the router declines, no other takes the
  # address, and Exim says "Unrouteable address" (as its dnslookup router does for
  # a domain that does not exist)
  driver = manualroute
  domains = nxdomain.exim.test
  route_list = * mx.nowhere.invalid byname
  host_find_failed = decline
  transport = to_dead
full:
  driver = accept
  domains = local.exim.test
  local_parts = full
  transport = to_quota
gone:
  driver = redirect
  domains = local.exim.test
  local_parts = gone
  allow_fail
  data = :fail: this mailbox is disabled
verify_only:
  # recipients the RCPT check accepts, so that their real failure comes later
  driver = accept
  domains = local.exim.test
  verify_only

begin transports
to_bounces:
  driver = smtp
  hosts = 127.0.0.1
  hosts_override
  allow_localhost
  port = {bounce_port}
to_sink:
  driver = smtp
  hosts = 127.0.0.1
  hosts_override
  allow_localhost
  port = {sink_port}
to_dead:
  driver = smtp
  hosts = 127.0.0.1
  hosts_override
  allow_localhost
  port = {dead_port}
  connect_timeout = 2s
to_quota:
  driver = appendfile
  file = {dir}/mail/full
  user = nobody
  group = nogroup
  quota = 1K

begin retry
# retry every second, give up after three: the queue lifetime in seconds
* * F,3s,1s
"""


class EximMta:
    """A throwaway Exim 4 (``exim -C FILE -bdf -oX PORT``), its own spool, for the Exim cases.

    Args: as :class:`PostfixMta`.
    """

    name = "exim"

    def __init__(self, root: str, sandbox: Sandbox, port: int, bounce_port: int,
                 sink_port: int) -> None:
        found = find_exim()
        if found is None:
            raise RuntimeError("exim is not installed")
        self.exim, _libs = found
        self.dir = os.path.join(root, "exim")
        self.sandbox = sandbox
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("spool", "log", "mail", "bin"):
            os.makedirs(os.path.join(self.dir, sub))
        os.chmod(self.dir, 0o755)
        for sub in ("spool", "log"):
            shutil.chown(os.path.join(self.dir, sub), 65534, 65534)
        shutil.chown(os.path.join(self.dir, "mail"), "nobody", "nogroup")
        self.conf = os.path.join(self.dir, "exim.conf")
        with open(self.conf, "w") as fp:
            fp.write(EXIM_CONF.format(exim=self.exim, dir=self.dir, port=port,
                                      bounce_domain=BOUNCE_DOMAIN, bounce_port=bounce_port,
                                      sink_port=sink_port, dead_port=free_port()))

    def start(self) -> None:
        """The daemon in the foreground (its own pid to stop), a queue run every second."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        self.proc = subprocess.Popen(
            self.sandbox.command([self.exim, "-C", self.conf, "-bdf", "-q1s"]),
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr"),
                                                            "wb"))
        if not wait_listening(self.port, 20):
            self.stop()
            raise RuntimeError(f"exim did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        out = []
        for name in ("stderr", "log/mainlog", "log/paniclog", "log/rejectlog"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as fp:
                    out.append(name + ":\n" + fp.read()[-2000:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM to the daemon (its queue runners finish on their own)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------------------
# The smart sink as the next hop with other servers' refusals

#: domain prefix -> the sink's behaviour (domains ``<prefix>.pf-hop.test`` for Postfix's
#: cases, ``<prefix>.ex-hop.test`` for Exim's). Each text
#: is the template of a named server, written here from its documented form.
SINK_DOMAINS: dict[str, dict[str, Any]] = {
    # Sendmail's "User unknown" at RCPT
    "rcpt-unknown": {"action": "reject", "code": 550, "status": "5.1.1",
                     "text": "<{rcpt}>... User unknown"},
    # a content filter that refuses at RCPT (Proofpoint-style wording)
    "rcpt-spam": {"action": "reject", "code": 550, "status": "5.7.1",
                  "text": "<{rcpt}>: Recipient address rejected: Message rejected as spam"},
    # a recipient organization's mail flow rule (Exchange Online's transport rule NDR)
    "rcpt-policy": {"action": "reject", "code": 550, "status": "5.7.1",
                    "text": "TRANSPORT.RULES.RejectMessage; the message was rejected by "
                            "organization policy"},
    # a spam verdict after the end of data (SpamAssassin behind an MTA)
    "data-spam": {"action": "reject", "at": "data", "code": 554, "status": "5.7.1",
                  "text": "Message rejected as spam by content filter, score 14.2"},
    # a full mailbox that never empties: 452 until the sender gives up
    "rcpt-defer": {"action": "defer", "code": 452, "status": "4.2.2",
                   "text": "<{rcpt}>: Recipient address rejected: Mailbox full", "times": 0},
    # Exim's relay refusal
    "rcpt-relay": {"action": "reject", "code": 550, "status": "5.7.1",
                   "text": "relay not permitted"},
    # a message size limit at the end of data (Microsoft's wording)
    "data-size": {"action": "reject", "at": "data", "code": 552, "status": "5.3.4",
                  "text": "Message size exceeds fixed maximum message size"},
}


def sink_scenario() -> Any:
    """The sink's scenario: one behaviour per hop domain, anything else accepted."""
    from hurricane.sink.scenario import scenario_from_dict

    return scenario_from_dict({
        "hostname": "mx.pf-hop.test",
        "behaviours": {name: dict(b) for name, b in SINK_DOMAINS.items()},
        "rules": [{"match": f"*@{name}.*", "behaviour": name} for name in SINK_DOMAINS],
    })


# ---------------------------------------------------------------------------
# The cases

POSTFIX_CASES: tuple[Case, ...] = (
    Case("postfix", "unknown local user", "nobody-here@local.postfix.test", "userunknown",
         True, "bounced", "local(8): no such user, local_recipient_maps empty"),
    Case("postfix", "unknown virtual user", "ghost2@vmail.postfix.test", "userunknown",
         True, "bounced", "virtual domain, address not in virtual_mailbox_maps"),
    Case("postfix", "mailbox over its size limit", "vfull@vmail.postfix.test", "mailboxfull",
         False, "bounced", "virtual(8), virtual_mailbox_limit exceeded"),
    Case("postfix", "x-unix user unknown", "xnouser@local.postfix.test", "userunknown", True,
         "bounced", "alias to a program: '5.1.1 <a>: user unknown', exit 67"),
    Case("postfix", "x-unix quota", "xfull@local.postfix.test", "mailboxfull", False,
         "bounced", "program: '5.2.2 mailbox full: quota exceeded', exit 73"),
    Case("postfix", "x-unix maildrop quota", "xquota@local.postfix.test", "mailboxfull", False,
         "bounced", "program: 'maildrop: maildir over quota.', exit 73"),
    Case("postfix", "x-unix spam", "xspam@local.postfix.test", "spamdetected", False,
         "bounced", "program: '5.7.1 message refused: spam score...', exit 77"),
    Case("postfix", "x-unix moved", "xmoved@local.postfix.test", "hasmoved", True,
         "bounced", "program: '5.1.6 mailbox has moved...', exit 67"),
    Case("postfix", "x-unix procmail error", "xprocmail@local.postfix.test", "mailererror",
         False, "bounced", "program: 'procmail: Error while writing...', exit 74"),
    Case("postfix", "x-unix program crash", "xcrash@local.postfix.test", "mailererror",
         False, "bounced", "program exits 70 and says nothing"),
    Case("postfix", "moved user", "moved@local.postfix.test", "hasmoved", True, "bounced",
         "relocated_maps"),
    Case("postfix", "next hop: unknown user at RCPT", "ghost@vmail.postfix.test",
         "userunknown", True, "bounced",
         "relayed to a Postfix smtpd: 550 5.1.1 User unknown in virtual mailbox table"),
    Case("postfix", "next hop: relay denied", "someone@relay.postfix.test", "norelaying",
         False, "bounced", "relayed to a Postfix smtpd: 554 5.7.1 Relay access denied"),
    Case("postfix", "next hop: sender rejected at MAIL", "someone@sender.postfix.test",
         "rejected", False, "bounced",
         "relayed to a Postfix smtpd: 553 5.7.1 Sender address rejected (MAIL FROM)"),
    Case("postfix", "next hop: message too big", "someone@size.postfix.test", "mesgtoobig",
         False, "bounced", "relayed to a Postfix smtpd: 552 5.3.4 Message size exceeds limit"),
    Case("postfix", "connection refused until give-up", "someone@dead.postfix.test",
         "expired", False, "bounced", "next hop port closed, maximal_queue_lifetime = 0"),
    Case("postfix", "host not found", "someone@nohost.postfix.test", "hostunknown", True,
         "bounced", "transport to an unresolvable name"),
    Case("postfix", "next hop: unknown user (Sendmail)", "a@rcpt-unknown.pf-hop.test",
         "userunknown", True, "bounced", "sink: 550 5.1.1 <a>... User unknown at RCPT"),
    Case("postfix", "next hop: spam at RCPT", "a@rcpt-spam.pf-hop.test", "spamdetected", False,
         "bounced", "sink: 550 5.7.1 ... rejected as spam at RCPT"),
    Case("postfix", "next hop: policy at RCPT", "a@rcpt-policy.pf-hop.test", "policyviolation",
         False, "bounced", "sink: 550 5.7.1 ... not allowed by the organization's policy"),
    Case("postfix", "next hop: spam after DATA", "a@data-spam.pf-hop.test", "spamdetected",
         False, "bounced", "sink: 554 5.7.1 rejected as spam after the end of data"),
    Case("postfix", "next hop: 4xx until give-up", "a@rcpt-defer.pf-hop.test", "mailboxfull",
         False, "bounced", "sink: 452 4.2.2 mailbox full on every try"),
    Case("postfix", "next hop: relay not permitted (Exim)", "a@rcpt-relay.pf-hop.test",
         "norelaying", False, "bounced", "sink: 550 5.7.1 relay not permitted"),
    Case("postfix", "next hop: size after DATA", "a@data-size.pf-hop.test", "mesgtoobig", False,
         "bounced", "sink: 552 5.3.4 Message size exceeds fixed maximum"),
)

EXIM_CASES: tuple[Case, ...] = (
    Case("exim", "unknown user at RCPT", "nobody-here@sync.exim.test", "userunknown", True,
         "failed", "ACL 'require verify = recipient': 550 Unrouteable address"),
    Case("exim", "disabled mailbox (:fail:)", "gone@local.exim.test", "suspend", False,
         "bounced", "redirect router: ':fail: this mailbox is disabled'"),
    Case("exim", "appendfile quota", "full@local.exim.test", "mailboxfull", False, "bounced",
         "appendfile quota = 1K, retried until the retry rule gives up"),
    Case("exim", "connection refused until give-up", "someone@dead.exim.test", "expired",
         False, "bounced", "next hop port closed, retry rule F,3s,1s"),
    Case("exim", "domain does not resolve", "someone@nxdomain.exim.test", "hostunknown", True,
         "bounced", "no router takes the address (host not found): Unrouteable address"),
    Case("exim", "next hop: unknown user (Sendmail)", "a@rcpt-unknown.ex-hop.test",
         "userunknown", True, "bounced", "sink: 550 5.1.1 <a>... User unknown at RCPT"),
    Case("exim", "next hop: spam at RCPT", "a@rcpt-spam.ex-hop.test", "spamdetected", False,
         "bounced", "sink: 550 5.7.1 ... rejected as spam at RCPT"),
    Case("exim", "next hop: policy at RCPT", "a@rcpt-policy.ex-hop.test", "policyviolation",
         False, "bounced", "sink: 550 5.7.1 TRANSPORT.RULES.RejectMessage at RCPT"),
    Case("exim", "next hop: spam after DATA", "a@data-spam.ex-hop.test", "spamdetected",
         False, "bounced", "sink: 554 5.7.1 rejected as spam after the end of data"),
    Case("exim", "next hop: 4xx until give-up", "a@rcpt-defer.ex-hop.test", "mailboxfull",
         False, "bounced", "sink: 452 4.2.2 mailbox full on every try"),
    Case("exim", "next hop: relay not permitted", "a@rcpt-relay.ex-hop.test", "norelaying",
         False, "bounced", "sink: 550 5.7.1 relay not permitted"),
    Case("exim", "next hop: size after DATA", "a@data-size.ex-hop.test", "mesgtoobig", False,
         "bounced", "sink: 552 5.3.4 Message size exceeds fixed maximum"),
)

CASES: tuple[Case, ...] = POSTFIX_CASES + EXIM_CASES


def route_domains(cases: Iterable[Case]) -> list[str]:
    """The recipient domains of the cases (each is routed to its MTA)."""
    return sorted({c.recipient.split("@", 1)[1] for c in cases})


def cleanup(path: str) -> None:
    """Remove the loop's directory tree, never failing."""
    shutil.rmtree(path, ignore_errors=True)


def temp_root() -> str:
    """A temporary directory for the MTAs (traversable by their users)."""
    root = tempfile.mkdtemp(prefix="hurricane-liveloop-")
    os.chmod(root, 0o755)
    return root


#: States a delivery does not leave in this loop (a delivered one may still bounce).
FINAL_STATES = frozenset({"bounced", "failed", "expired", "complained", "suppressed"})


def _rig_class() -> Any:
    from hurricane.demo import Rig

    class LiveRig(Rig):
        """hurricane.demo's rig with each case's domain routed to its MTA."""

        routes: dict[str, int] = {}

        def config_dict(self, sink_port: int) -> dict[str, Any]:
            data: dict[str, Any] = super().config_dict(sink_port)
            data["routes"] = {d: f"127.0.0.1:{p}" for d, p in self.routes.items()}
            return data

    return LiveRig


async def run_loop(reactor: Any, root: str, cases: Sequence[Case], mta_classes: dict[str, Any],
                   timeout: float = 90.0, keep_returns: str | None = None) -> list[Outcome]:
    """Deliver one message per case through Hurricane to its MTA; collect the outcomes.

    Args:
        reactor: the reactor Hurricane runs on.
        root: a directory for Hurricane's data and the MTAs (from :func:`temp_root`).
        cases: the cases; only those whose MTA is in ``mta_classes`` run.
        mta_classes: MTA name -> a class like :class:`PostfixMta`.
        timeout: seconds to wait for every case to reach a final state.
        keep_returns: a directory to copy each returned message into (for reading).

    Returns:
        One outcome per case that ran (state None: nothing final in time).
    """
    from twisted.internet import threads

    cases = [c for c in cases if c.mta in mta_classes]
    mta_ports = {name: free_port() for name in mta_classes}
    exim = find_exim() if "exim" in mta_classes else None
    sandbox = Sandbox(root, users=[("Debian-exim", 65534, 65534)],
                      libs=exim[1] if exim else ())
    rig = _rig_class()(reactor, os.path.join(root, "hurricane"), sink_scenario(), web=False,
                       delivery={"first_retry": 0.5, "max_retry_interval": 1.0,
                                 "max_age": 30.0})
    rig.routes = {d: mta_ports[c.mta] for c in cases for d in [c.recipient.split("@")[1]]}
    mtas: list[Any] = []
    await rig.start()
    try:
        bounce_port = rig.port("bounce")
        sink_port = rig._sink_port.getHost().port
        for name, cls in mta_classes.items():
            mta = cls(root, sandbox, mta_ports[name], bounce_port, sink_port)
            mtas.append(mta)
            await threads.deferToThread(mta.start)
        await rig.submit([c.recipient for c in cases], mailing_id="liveloop", connections=2)
        deadline = reactor.seconds() + timeout
        rows: dict[str, Any] = {}
        while True:
            for c in cases:
                found = await rig.store.find_deliveries(recipient=c.recipient, limit=1)
                if found:
                    rows[c.recipient] = found[0]
            if all(c.recipient in rows and rows[c.recipient].state.value in FINAL_STATES
                   for c in cases) or reactor.seconds() > deadline:
                break
            await rig.sleep(0.5)
        out = []
        for c in cases:
            d = rows.get(c.recipient)
            if d is None:
                out.append(Outcome(c, None, None, None, None, ""))
                continue
            final = d.state.value in FINAL_STATES
            out.append(Outcome(c, d.state.value, d.reason if final else None,
                               d.hard if final else None, d.status, d.text or ""))
            if keep_returns:
                await _keep(rig.store, d.delivery_id, keep_returns, c)
        return out
    finally:
        for mta in mtas:
            await threads.deferToThread(mta.stop)
        await rig.stop()


async def _keep(store: Any, delivery_id: int, where: str, case: Case) -> None:
    """Copy the returned message(s) of one delivery into ``where``."""
    os.makedirs(where, exist_ok=True)
    for ev in await store.events(delivery_id):
        if ev.bounce_id is not None:
            b = await store.load_bounce(ev.bounce_id)
            if b is not None:
                name = case.mta + "-" + "".join(ch if ch.isalnum() else "-" for ch in case.cause)
                with open(os.path.join(where, name + ".eml"), "wb") as fp:
                    fp.write(b.raw)
