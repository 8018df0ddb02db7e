"""Configuration: one TOML file into frozen, typed dataclasses, one per section.

Every key is validated at start-up. An unknown key, a wrong type or a bad
endpoint string raises :class:`ConfigError`, whose message names the file and
the key path (``[delivery] max_age``), in the manner of Synapse's
``ConfigError(msg, path)``. Every key is documented, with its default, in
``etc/hurricane.toml``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import os
import socket
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from hurricane.opsconfig import AccountingConfig, WebhookConfig
from hurricane.outcome import SqliteSync, TlsPolicy
from hurricane.passwords import is_password_hash, is_token_hash
from hurricane.streams import DEFAULT_STREAM, StreamConfig, Streams, UnsubscribeConfig

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorCore

#: Default listeners: loopback only, unprivileged ports.
DEFAULT_SUBMISSION_LISTEN = ("tcp:2587:interface=127.0.0.1",)
DEFAULT_BOUNCE_LISTEN = ("tcp:2525:interface=127.0.0.1",)
DEFAULT_WEB_LISTEN = ("tcp:8025:interface=127.0.0.1",)
DEFAULT_ADMIN_LISTEN = "tcp:8022:interface=127.0.0.1"

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration value is wrong.

    Args:
        msg: what was expected.
        path: the key path, e.g. ``("delivery", "max_age")``.
        file: the configuration file, when there is one.
    """

    def __init__(self, msg: str, path: Sequence[str] = (), file: str | None = None) -> None:
        self.msg = msg
        self.path = tuple(path)
        self.file = file
        super().__init__(str(self))

    def with_file(self, file: str | None) -> ConfigError:
        """The same error, naming ``file``."""
        return ConfigError(self.msg, self.path, file)

    def __str__(self) -> str:
        where = self.file or "configuration"
        if self.path:
            key = _format_path(self.path)
            return f"{where}: {key}: {self.msg}"
        return f"{where}: {self.msg}"


def _format_path(path: Sequence[str]) -> str:
    if len(path) == 1:
        return f"[{path[0]}]"
    head, rest = path[0], path[1:]
    return f"[{head}] " + ".".join(rest)


# -- sections -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: identity of this node and where it keeps its files."""

    #: Name used in EHLO, Received headers and Message-IDs we add.
    hostname: str = field(default_factory=socket.getfqdn)
    #: Directory for the SQLite database, secrets and spools.
    data_dir: str = "hurricane-data"
    #: Name of this node in leases and logs (default: hostname and pid).
    node_id: str = ""
    #: Application log as JSON lines to this file ("" = twistd's log).
    json_log: str = ""


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where outcomes and the queue live."""

    #: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``; "" means
    #: ``sqlite:///<data_dir>/hurricane.db``.
    url: str = ""
    #: SQLite ``PRAGMA synchronous`` (FULL survives power loss; NORMAL a crash).
    sqlite_synchronous: SqliteSync = SqliteSync.full
    #: PostgreSQL connections per node.
    pool_size: int = 4
    #: PostgreSQL: plan the enqueue statement once per connection (PREPARE).
    #: false behind PgBouncer in transaction pooling mode.
    postgres_prepared_statements: bool = True


@dataclass(frozen=True)
class UserConfig:
    """One submission user: ``[submission.users] name = "pbkdf2_sha256$..."``."""

    name: str
    password_hash: str


@dataclass(frozen=True)
class SubmissionConfig:
    """``[submission]``: the ESMTP listener for applications."""

    listen: tuple[str, ...] = DEFAULT_SUBMISSION_LISTEN
    #: Clients from these networks may relay without AUTH.
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: name -> password hash (``hurricane passwd`` makes one).
    users: Mapping[str, str] = field(default_factory=dict)
    #: A file of ``name:hash`` lines, read in addition to ``users``.
    users_file: str = ""
    tls_certificate: str = ""
    tls_key: str = ""
    max_message_size: int = 25 * MIB
    max_recipients: int = 100
    max_line_length: int = 2048
    idle_timeout: float = 300.0
    max_errors: int = 20
    max_connections_per_ip: int = 20
    max_connections: int = 200
    max_auth_failures: int = 3
    #: Seconds an address stays blocked after too many AUTH failures.
    auth_block_seconds: float = 600.0
    #: Require AUTH even from trusted networks.
    require_auth: bool = False


@dataclass(frozen=True)
class BounceConfig:
    """``[bounce]``: the return-path domain and its ESMTP listener."""

    #: Domain of every VERP return path; MX of this domain must reach ``listen``.
    domain: str = "bounces.localhost"
    listen: tuple[str, ...] = DEFAULT_BOUNCE_LISTEN
    #: VERP signing keys (JSON, mode 0600); "" means ``<data_dir>/verp-keys.json``.
    keys_file: str = ""
    #: Days a VERP token stays valid.
    token_max_age_days: int = 30
    #: Local parts accepted besides VERP addresses and postmaster.
    feedback_addresses: tuple[str, ...] = ("abuse", "fbl")
    #: Postmaster and feedback recipients (anyone may use them) accepted per
    #: transaction; more get 452 4.5.3.
    max_postmaster_recipients: int = 5
    #: Seconds the raw bytes of analyzed returned mail are kept; 0 keeps them.
    retention: float = 90 * 86400.0
    tls_certificate: str = ""
    tls_key: str = ""
    max_message_size: int = 5 * MIB
    max_recipients: int = 20
    max_line_length: int = 2048
    idle_timeout: float = 300.0
    max_errors: int = 10
    max_connections_per_ip: int = 10
    max_connections: int = 200
    #: Operator rule files for the reply classifier, checked before the packaged rules.
    rules_files: tuple[str, ...] = ()
    analysis_cpu_seconds: float = 2.0
    analysis_max_depth: int = 50
    analysis_max_parts: int = 2000
    #: Worker processes that analyze returned messages beside the reactor;
    #: 0 analyzes in threads of the server process (sharing its GIL).
    analysis_processes: int = 1


@dataclass(frozen=True)
class DkimKeyConfig:
    """``[[delivery.dkim]]``: one signing key for a From domain."""

    domain: str
    selector: str
    key_file: str
    #: rsa-sha256 or ed25519-sha256; "" guesses from the key.
    algorithm: str = ""


@dataclass(frozen=True)
class TlsPolicyConfig:
    """``[delivery.tls_policy]``: per destination domain, ``opportunistic``,
    ``require`` (encrypt, any certificate) or ``verify`` (certificate and name)."""

    default: TlsPolicy = TlsPolicy.opportunistic
    domains: Mapping[str, TlsPolicy] = field(default_factory=dict)


@dataclass(frozen=True)
class SendingPoolConfig:
    """``[[delivery.pools]]``: local addresses mail is sent from (issue 21).

    ``helo`` maps an address to the name it says in EHLO (its reverse DNS);
    ``weights`` an address to its share (default 1: round robin);
    ``warmup`` is a schedule of ``[day, limit]`` pairs (messages per day per
    provider from the address's first use; after the last day, no limit),
    or ``warmup_curve`` names one (:data:`hurricane.outbound.warmup.CURVES`).
    """

    name: str
    addresses: tuple[str, ...]
    helo: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, int] = field(default_factory=dict)
    warmup: tuple[tuple[int, ...], ...] = ()
    warmup_curve: str = ""

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each invalid setting."""
        found: list[tuple[str, str]] = []
        if not self.addresses:
            found.append(("addresses", "expected at least one address"))
        for a in self.addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                found.append(("addresses", f"expected an IP address, got {a!r}"))
        for key, table in (("helo", self.helo), ("weights", self.weights)):
            found += [(key, f"{a!r} is not one of the pool's addresses")
                      for a in table if a not in self.addresses]
        found += [("weights", f"expected an integer >= 1 for {a}")
                  for a, w in self.weights.items() if w < 1]
        days = [d[0] for d in self.warmup if len(d) == 2]
        if len(days) != len(self.warmup) or days != sorted(set(days)) or any(
                d < 1 or n < 0 for d, n in (p for p in self.warmup if len(p) == 2)):
            found.append(("warmup", "expected [[day, limit], ...] with days >= 1 increasing"))
        if self.warmup and self.warmup_curve:
            found.append(("warmup_curve", "give warmup or warmup_curve, not both"))
        return found


@dataclass(frozen=True)
class MtaStsConfig:
    """``[delivery.mta_sts]``: RFC 8461 (off unless ``enabled``)."""

    enabled: bool = False
    #: Seconds a fetch of the policy file may take.
    fetch_timeout: float = 30.0
    #: Seconds between background refreshes of the kept policies.
    refresh_interval: float = 3600.0


@dataclass(frozen=True)
class TlsRptConfig:
    """``[delivery.tlsrpt]``: RFC 8460 aggregate reports we send."""

    enabled: bool = False
    organization: str = ""
    #: contact-info of the report, and the From of reports sent by mail.
    contact: str = ""


@dataclass(frozen=True)
class TimeoutsConfig:
    """``[delivery.timeouts]``: RFC 5321 4.5.3.2 client timeouts, seconds."""

    connect: float = 30.0
    greeting: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0


@dataclass(frozen=True)
class ProviderConfig:
    """``[[delivery.providers]]``: one budget for every domain a provider hosts (issue 19).

    A recipient domain belongs to the first provider whose ``domains`` glob
    matches it, or whose ``mx`` glob matches the MX host it was delivered
    through (the MX roll-up: every domain hosted at ``*.google.com`` shares
    one budget). 0 for a limit = the ``[delivery]`` value.
    """

    name: str
    mx: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    max_connections: int = 0
    messages_per_connection: int = 0
    rate_per_minute: int = 0


@dataclass(frozen=True)
class AdaptiveConfig:
    """``[delivery.adaptive]``: how provider limits follow the receivers' answers."""

    enabled: bool = True
    #: The rate is multiplied by this on a throttling refusal (421 4.7.28, speeding...).
    throttle_factor: float = 0.7
    #: Seconds a provider pauses after a throttling refusal (also the retry delay
    #: of the throttled messages, which keep their own backoff).
    throttle_pause: float = 1.0
    #: Seconds a provider is suspended after a blocked/badreputation refusal.
    suspend_seconds: float = 300.0
    #: Successful transactions in a row before the rate grows again.
    ramp_after: int = 20
    #: The rate is multiplied by this on each ramp step, up to the configured rate.
    ramp_factor: float = 1.25
    #: The rate never falls below this (messages per minute).
    min_rate_per_minute: int = 6
    #: Seconds of the rolling window of late sender-side bounces and complaints.
    window: float = 3600.0
    #: Deliveries in the window before the late rates are judged.
    window_min_deliveries: int = 100
    #: Late sender-side bounces (blocked, badreputation, spamdetected,
    #: policyviolation) per delivery above which the rate is cut.
    late_block_rate: float = 0.02
    #: Complaints per delivery above which the provider is suspended.
    complaint_rate: float = 0.003
    #: Seconds between looks at the store (shared state, late outcomes, breakers).
    interval: float = 2.0


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """``[delivery.circuit_breaker]``: a mailing's own outcomes hold it (issue 19)."""

    enabled: bool = True
    #: Recipients with an outcome before the rates are judged.
    min_recipients: int = 50
    #: Hard refusals and hard bounces per recipient with an outcome.
    hard_bounce_rate: float = 0.05
    #: Complaints per recipient with an outcome.
    complaint_rate: float = 0.003


@dataclass(frozen=True)
class DeliveryConfig:
    """``[delivery]``: retries, limits and the return path."""

    first_retry: float = 300.0
    max_retry_interval: float = 14400.0
    #: Age after which a recipient still deferred is ``expired``.
    max_age: float = 259200.0
    #: Random spread added to each retry interval, as a fraction.
    retry_jitter: float = 0.2
    #: ``per-recipient`` (one VERP sender per recipient) or ``per-message``.
    verp: str = "per-recipient"
    max_connections_per_destination: int = 5
    messages_per_connection: int = 100
    #: Messages per minute per destination domain, 0 = no limit.
    rate_per_minute: int = 0
    #: Recipients in one SMTP transaction.
    max_recipients_per_transaction: int = 50
    #: Deliveries in flight on this node at once, from claim until their result is
    #: written: also the most a crash can send twice.
    max_in_flight: int = 1000
    #: Seconds a claimed delivery stays leased to this node.
    lease_seconds: float = 600.0
    #: Seconds between scans of the queue when idle.
    poll_interval: float = 1.0
    #: Seconds an MX answer is kept at most (the record's TTL is used if shorter).
    mx_cache_seconds: float = 3600.0
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    tls_policy: TlsPolicyConfig = field(default_factory=TlsPolicyConfig)
    dkim: tuple[DkimKeyConfig, ...] = ()
    #: Source address for outgoing connections ("" = the system's choice).
    bind_address: str = ""
    #: The sending pool used when a message names none ("" = ``bind_address``).
    pool: str = ""
    pools: tuple[SendingPoolConfig, ...] = ()
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    tlsrpt: TlsRptConfig = field(default_factory=TlsRptConfig)
    providers: tuple[ProviderConfig, ...] = ()
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the report, the JSON API and /metrics."""

    listen: tuple[str, ...] = DEFAULT_WEB_LISTEN
    #: name -> hashed bearer token for the API (``hurricane passwd --token``:
    #: ``sha256$...``; older ``pbkdf2_sha256$...`` tokens still work).
    tokens: Mapping[str, str] = field(default_factory=dict)
    #: name -> hashed password for the web report (HTTP basic).
    users: Mapping[str, str] = field(default_factory=dict)
    #: Failed logins (wrong token, password or user) from one address (an
    #: IPv6 /64) within ``auth_block_seconds`` before it gets 429 without
    #: any verification.
    max_auth_failures: int = 10
    #: The window of ``max_auth_failures``, in seconds.
    auth_block_seconds: float = 60.0


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: the SSH manhole (off unless ``enabled``)."""

    enabled: bool = False
    listen: str = DEFAULT_ADMIN_LISTEN
    #: OpenSSH authorized_keys file of the keys that may log in.
    authorized_keys: str = ""
    #: User names allowed to log in ([] = any name with an authorized key).
    usernames: tuple[str, ...] = ()
    #: name -> password hash; empty = no password login at all.
    passwords: Mapping[str, str] = field(default_factory=dict)
    #: SSH host key ("" = <data_dir>/admin_ssh_host_ed25519_key, made on first start).
    host_key: str = ""


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    bounce: BounceConfig = field(default_factory=BounceConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    #: destination domain (or "*") -> "host:port"
    routes: Mapping[str, str] = field(default_factory=dict)
    web: WebConfig = field(default_factory=WebConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    #: ``[[streams]]``: message streams (a default transactional one always exists).
    streams: tuple[StreamConfig, ...] = ()
    #: ``[unsubscribe]``: the one-click unsubscribe endpoint of bulk streams.
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    #: The file this came from (None for built-in defaults).
    source: str | None = None

    # -- derived values ---------------------------------------------------

    @property
    def stream_set(self) -> Streams:
        """The configured streams by name, the default transactional one included."""
        return Streams(self.streams)

    @property
    def data_dir(self) -> str:
        """The data directory as an absolute path."""
        return os.path.abspath(self.server.data_dir)

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to SQLite in the data directory."""
        if self.store.url:
            return self.store.url
        # data_dir is absolute: "sqlite://" + "/abs/..." is sqlite:///abs/...
        # (one more slash would make the store's file "//abs/...", which
        # POSIX keeps as written and every message then shows).
        return "sqlite://" + os.path.join(self.data_dir, "hurricane.db")

    @property
    def verp_keys_file(self) -> str:
        """Where the VERP keys live."""
        return self.bounce.keys_file or os.path.join(self.data_dir, "verp-keys.json")

    @property
    def node_id(self) -> str:
        """This node's name in leases: stable across restarts, distinct per data dir.

        A restarted node takes back its own leases at once (the scheduler
        releases them at start-up), so the default must not change between
        runs: host name plus a digest of the data directory.
        """
        if self.server.node_id:
            return self.server.node_id
        digest = hashlib.sha256(self.data_dir.encode()).hexdigest()[:8]
        return f"{self.server.hostname}:{digest}"


# -- loading ------------------------------------------------------------------

_SECTIONS = {
    "server": ServerConfig,
    "store": StoreConfig,
    "submission": SubmissionConfig,
    "bounce": BounceConfig,
    "delivery": DeliveryConfig,
    "web": WebConfig,
    "admin": AdminConfig,
    "accounting": AccountingConfig,
    "unsubscribe": UnsubscribeConfig,
}


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a configuration file; ``None`` gives the defaults.

    Raises:
        ConfigError: naming the file and the key path.
    """
    if path is None:
        return Config()
    file = os.fspath(path)
    try:
        with open(file, "rb") as fp:
            data = tomllib.load(fp)
    except FileNotFoundError:
        raise ConfigError("file not found", (), file) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", (), file) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", (), file) from None
    try:
        config = config_from_dict(data)
    except ConfigError as e:
        raise e.with_file(file) from None
    return dataclasses.replace(config, source=file)


def config_from_dict(data: Mapping[str, object]) -> Config:
    """Build a :class:`Config` from parsed TOML, validating every key."""
    # Values checked against the field types by _coerce (reflection mypy cannot follow).
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "routes":
            kwargs["routes"] = _routes(value, ("routes",))
        elif key == "webhooks":
            kwargs["webhooks"] = _coerce(tuple[WebhookConfig, ...], value, ("webhooks",))
        elif key == "streams":
            kwargs["streams"] = _coerce(tuple[StreamConfig, ...], value, ("streams",))
        elif key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, (key,))
        else:
            raise ConfigError(
                "unknown section; expected one of "
                f"{', '.join(sorted([*_SECTIONS, 'routes', 'streams', 'webhooks']))}",
                (key,),
            )
    config = Config(**kwargs)
    _check(config)
    return config


def _build(cls: type, value: object, path: tuple[str, ...]) -> object:
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table, got {_tname(value)}", path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for key, item in value.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key; expected one of {', '.join(sorted(fields))}", (*path, key)
            )
        kwargs[key] = _coerce(hints[key], item, (*path, key))
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(str(e).split("() ", 1)[-1], path) from None


def _coerce(tp: object, value: object, path: tuple[str, ...]) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(e.msg)
        raise ConfigError("; ".join(errors), path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {_tname(value)}", path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"expected an integer, got {_tname(value)}", path)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"expected a number, got {_tname(value)}", path)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected a string, got {_tname(value)}", path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _member(tp, value, path)
    if origin is tuple:
        if isinstance(value, str):
            raise ConfigError("expected a list, got a string (write [\"...\"])", path)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {_tname(value)}", path)
        item_type = args[0]
        return tuple(
            _coerce(item_type, v, (*path[:-1], f"{path[-1]}[{i}]")) for i, v in enumerate(value)
        )
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {_tname(value)}", path)
        vt = args[1] if args else str
        return types.MappingProxyType(
            {str(k): _coerce(vt, v, (*path, str(k))) for k, v in value.items()}
        )
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)  # type: ignore[arg-type]
    raise ConfigError(f"unsupported type {tp!r}", path)  # pragma: no cover


def _member(tp: type[enum.Enum], value: object, path: tuple[str, ...]) -> enum.Enum:
    """The member of a vocabulary (:mod:`hurricane.outcome`) a config word names.

    The words are the members' values; an upper-case vocabulary (SQLite's
    levels) is matched in any case, as SQLite itself does.
    """
    if isinstance(value, str):
        for member in tp:
            word = str(member.value)
            if value == word or (word.isupper() and value.upper() == word):
                return member
    words = ", ".join(str(m.value) for m in tp)
    raise ConfigError(f"expected one of {words}, got {value!r}", path)


def _routes(value: object, path: tuple[str, ...]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table, got {_tname(value)}", path)
    routes: dict[str, str] = {}
    for domain, target in value.items():
        key_path = (*path, f'"{domain}"')
        if not isinstance(target, str):
            raise ConfigError(f"expected \"host:port\", got {_tname(target)}", key_path)
        try:
            parse_host_port(target)
        except ValueError as e:
            raise ConfigError(str(e), key_path) from None
        routes[domain.lower().rstrip(".")] = target
    return types.MappingProxyType(routes)


def parse_host_port(value: str, default_port: int = 25) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port`` or ``host`` (port 25).

    Raises:
        ValueError: for anything else.
    """
    v = value.strip()
    if not v:
        raise ValueError("expected \"host:port\", got an empty string")
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise ValueError(f"expected \"[address]:port\", got {value!r}")
        host, rest = v[1:end], v[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected \"[address]:port\", got {value!r}")
        port_s = rest[1:] if rest else ""
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    elif ":" in v:
        raise ValueError(f"expected \"host:port\" (IPv6 in brackets), got {value!r}")
    else:
        host, port_s = v, ""
    if not host:
        raise ValueError(f"expected \"host:port\", got {value!r}")
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"expected a port 1-65535, got {port_s!r}")
        return host, int(port_s)
    return host, default_port


def _tname(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# -- cross-field checks ---------------------------------------------------------


def check_endpoint(description: str, path: tuple[str, ...]) -> None:
    """Parse a server endpoint string the way twistd will, without listening."""
    from twisted.internet import endpoints

    if not isinstance(description, str) or not description.strip():
        raise ConfigError("expected an endpoint string like \"tcp:2525:interface=127.0.0.1\"",
                          path)
    try:
        # The reactor is only stored by the endpoint; parsing needs none.
        endpoints.serverFromString(_NO_REACTOR, description)
    except Exception as e:  # any parse error: ValueError, KeyError, TypeError...
        raise ConfigError(
            f"bad endpoint string {description!r}: {e or type(e).__name__}", path
        ) from None


class _NoReactor:
    """Stands in for a reactor while an endpoint string is parsed."""


_NO_REACTOR = cast("IReactorCore", _NoReactor())  # only stored by the endpoint parsers

_VERP_MODES = ("per-recipient", "per-message")


def _positive(value: float, path: tuple[str, ...], allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"expected a number {'>= 0' if allow_zero else '> 0'}, got {value}",
                          path)


def _check(c: Config) -> None:
    for name in ("submission", "bounce", "web"):
        for i, ep in enumerate(getattr(c, name).listen):
            check_endpoint(ep, (name, f"listen[{i}]"))
    if c.admin.enabled:
        check_endpoint(c.admin.listen, ("admin", "listen"))
    for i, net in enumerate(c.submission.trusted_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"expected a CIDR network like 10.0.0.0/8, got {net!r}",
                              ("submission", f"trusted_networks[{i}]")) from None
    url = c.store.url
    if url and not url.startswith(("sqlite:", "postgresql://", "postgres://", "memory:")):
        raise ConfigError("expected sqlite:///path.db or postgresql://user@host:port/db",
                          ("store", "url"))
    if c.delivery.verp not in _VERP_MODES:
        raise ConfigError(f"expected one of {', '.join(_VERP_MODES)}, got {c.delivery.verp!r}",
                          ("delivery", "verp"))
    for key in ("first_retry", "max_retry_interval", "max_age", "lease_seconds",
                "poll_interval"):
        _positive(getattr(c.delivery, key), ("delivery", key))
    if c.delivery.max_retry_interval < c.delivery.first_retry:
        raise ConfigError("must be >= first_retry", ("delivery", "max_retry_interval"))
    if not 0 <= c.delivery.retry_jitter <= 1:
        raise ConfigError("expected a fraction between 0 and 1", ("delivery", "retry_jitter"))
    for key in ("max_connections_per_destination", "messages_per_connection",
                "max_recipients_per_transaction", "max_in_flight"):
        if getattr(c.delivery, key) < 1:
            raise ConfigError("expected an integer >= 1", ("delivery", key))
    for name in ("submission", "bounce"):
        s = getattr(c, name)
        for key in ("max_message_size", "max_recipients", "max_line_length", "max_errors",
                    "max_connections_per_ip", "max_connections"):
            if getattr(s, key) < 1:
                raise ConfigError("expected an integer >= 1", (name, key))
        if bool(s.tls_certificate) != bool(s.tls_key):
            raise ConfigError("tls_certificate and tls_key go together", (name, "tls_key"))
    if c.bounce.max_postmaster_recipients < 1:
        raise ConfigError("expected an integer >= 1", ("bounce", "max_postmaster_recipients"))
    if c.bounce.retention != 0 and c.bounce.retention < 86400:
        # also catches a number of days written where seconds are expected
        raise ConfigError("expected seconds: 0 (keep for ever) or at least 86400 (one day); "
                          f"90 days is {90 * 86400}", ("bounce", "retention"))
    if not 0 <= c.bounce.analysis_processes <= 64:
        raise ConfigError("expected 0-64 (0: analyze in threads)",
                          ("bounce", "analysis_processes"))
    if c.bounce.token_max_age_days < 1 or c.bounce.token_max_age_days > 900:
        raise ConfigError("expected 1-900 days", ("bounce", "token_max_age_days"))
    if not _is_domain(c.bounce.domain):
        raise ConfigError(f"expected a domain name, got {c.bounce.domain!r}",
                          ("bounce", "domain"))
    for i, local in enumerate(c.bounce.feedback_addresses):
        if not local or "@" in local or not all(ch.isalnum() or ch in "-_." for ch in local):
            raise ConfigError(f"expected a local part like \"abuse\", got {local!r}",
                              ("bounce", f"feedback_addresses[{i}]"))
    for key, msg in c.accounting.problems():
        raise ConfigError(msg, ("accounting", key))
    for i, hook in enumerate(c.webhooks):
        for key, msg in hook.problems():
            raise ConfigError(msg, (f"webhooks[{i}]", key))
    _check_streams(c)
    _check_secrets(c)
    _check_pools(c)
    for i, dkim_key in enumerate(c.delivery.dkim):
        if dkim_key.algorithm not in ("", "rsa-sha256", "ed25519-sha256"):
            raise ConfigError("expected rsa-sha256 or ed25519-sha256",
                              ("delivery", f"dkim[{i}]", "algorithm"))
    _check_providers(c.delivery)


def _check_providers(d: DeliveryConfig) -> None:
    """``[[delivery.providers]]``, ``[delivery.adaptive]``, ``[delivery.circuit_breaker]``."""
    names: set[str] = set()
    for i, p in enumerate(d.providers):
        path = ("delivery", f"providers[{i}]")
        if not p.name or not all(ch.isalnum() or ch in "-_." for ch in p.name) \
                or p.name == "default" or p.name in names:
            raise ConfigError("expected a unique name of letters, digits, - _ . "
                              "(\"default\" is the [delivery] provider)", (*path, "name"))
        names.add(p.name)
        if not p.mx and not p.domains:
            raise ConfigError("expected mx or domains globs", path)
        for key in ("max_connections", "messages_per_connection", "rate_per_minute"):
            if getattr(p, key) < 0:
                raise ConfigError("expected an integer >= 0", (*path, key))
    a = d.adaptive
    for key in ("throttle_pause", "suspend_seconds", "window", "interval"):
        _positive(getattr(a, key), ("delivery", "adaptive", key))
    if not 0 < a.throttle_factor < 1:
        raise ConfigError("expected a fraction between 0 and 1",
                          ("delivery", "adaptive", "throttle_factor"))
    if a.ramp_factor <= 1:
        raise ConfigError("expected a number > 1", ("delivery", "adaptive", "ramp_factor"))
    for key in ("ramp_after", "min_rate_per_minute", "window_min_deliveries"):
        if getattr(a, key) < 1:
            raise ConfigError("expected an integer >= 1", ("delivery", "adaptive", key))
    b = d.circuit_breaker
    if b.min_recipients < 1:
        raise ConfigError("expected an integer >= 1",
                          ("delivery", "circuit_breaker", "min_recipients"))
    for key in ("hard_bounce_rate", "complaint_rate"):
        if not 0 < getattr(b, key) <= 1:
            raise ConfigError("expected a fraction between 0 and 1",
                              ("delivery", "circuit_breaker", key))
    for key in ("late_block_rate", "complaint_rate"):
        if not 0 < getattr(a, key) <= 1:
            raise ConfigError("expected a fraction between 0 and 1",
                              ("delivery", "adaptive", key))


def _check_pools(c: Config) -> None:
    """``[[delivery.pools]]`` and ``[delivery] pool`` (issue 21)."""
    names = [p.name for p in c.delivery.pools]
    for i, pool in enumerate(c.delivery.pools):
        for key, msg in pool.problems():
            raise ConfigError(msg, ("delivery", f"pools[{i}]", key))
        if names.count(pool.name) > 1:
            raise ConfigError(f"pool {pool.name!r} is defined twice",
                              ("delivery", f"pools[{i}]", "name"))
    if c.delivery.pool and c.delivery.pool not in names:
        raise ConfigError(f"no [[delivery.pools]] named {c.delivery.pool!r}",
                          ("delivery", "pool"))
    for i, stream in enumerate(c.streams):
        if stream.pool and stream.pool not in names:
            raise ConfigError(f"no [[delivery.pools]] named {stream.pool!r}",
                              (f"streams[{i}]", "pool"))


def _check_streams(c: Config) -> None:
    seen: set[str] = set()
    for i, stream in enumerate(c.streams):
        for key, msg in stream.problems():
            raise ConfigError(msg, (f"streams[{i}]", key))
        if stream.name in seen:
            raise ConfigError(f"stream {stream.name!r} is defined twice", (f"streams[{i}]", "name"))
        seen.add(stream.name)
        if stream.name == DEFAULT_STREAM and stream.bulk:
            raise ConfigError(f"the default stream {DEFAULT_STREAM!r} is transactional; "
                              "give the bulk stream another name", (f"streams[{i}]", "kind"))
    for key, msg in c.unsubscribe.problems():
        raise ConfigError(msg, ("unsubscribe", key))
    for i, ep in enumerate(c.unsubscribe.listen):
        check_endpoint(ep, ("unsubscribe", f"listen[{i}]"))


def _check_secrets(c: Config) -> None:
    """Hashes must have a known form; passwords must be slow (pbkdf2)."""
    for name, value in c.web.tokens.items():
        if not is_token_hash(value):
            raise ConfigError("expected a token hash from 'hurricane passwd --token' "
                              "(sha256$<64 hex digits>, or pbkdf2_sha256$...)",
                              ("web", "tokens", name))
    for section, users in (("web", c.web.users), ("submission", c.submission.users)):
        for name, value in users.items():
            if not is_password_hash(value):
                raise ConfigError("expected a password hash from 'hurricane passwd' "
                                  "(pbkdf2_sha256$<iterations 1000-10000000>$<salt>$<hash>); "
                                  "a fast sha256$ hash is for API tokens only",
                                  (section, "users", name))
    for section, block in (("web", c.web), ("submission", c.submission)):
        if block.max_auth_failures < 1:
            raise ConfigError("expected an integer >= 1", (section, "max_auth_failures"))
        _positive(block.auth_block_seconds, (section, "auth_block_seconds"))


def _is_domain(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return bool(name) and len(name) <= 253 and all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(ch.isalnum() or ch == "-" for ch in label)
        for label in labels
    )


# -- the files a configuration names ---------------------------------------------------


@dataclass(frozen=True)
class PathReport:
    """What :func:`check_paths` found.

    Args:
        errors: files or directories the server cannot use as configured, each
            naming its key path and the path it looked at.
        notes: paths that do not exist yet and that the server will create at
            its first start (the data directory, the VERP keys...).
    """

    errors: tuple[ConfigError, ...]
    notes: tuple[str, ...]


def _absolute(path: str) -> str:
    # As the server opens it: relative to the current directory, no "~".
    return os.path.abspath(path)


def _creatable(path: str) -> str | None:
    """None when ``path`` (missing) can be created as a directory by this user,
    else why not (naming the ancestor in the way)."""
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        if os.path.dirname(parent) == parent:
            break
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return None


def _input_file(path: str) -> str | None:
    """None when ``path`` is a readable regular file, else what is wrong with it."""
    if not os.path.exists(path):
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            return f"{path}: no such file (and no directory {directory})"
        return f"{path}: no such file"
    if os.path.isdir(path):
        return f"{path}: is a directory, expected a file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable by this user"
    return None


def _sqlite_file(config: Config) -> str | None:
    """The SQLite database file of the store (None for other engines or a URL
    the store factory refuses, which reports it itself)."""
    from hurricane.store.factory import sqlite_file
    from hurricane.store.interface import StoreConfigError

    try:
        return sqlite_file(config.store_url, config.data_dir)
    except StoreConfigError:
        return None


def check_paths(config: Config) -> PathReport:
    """Check every file and directory the configuration names, as the server
    will use them, without creating or changing anything.

    Files the server only reads (TLS certificates and keys, ``users_file``,
    DKIM keys, rule files, webhook secrets, the admin console's
    ``authorized_keys`` when the console is enabled) must exist and be
    readable. Paths the server creates at its first start (``data_dir``, the
    VERP keys, the admin host key, a SQLite database, the log files) may be
    missing: that is a note, unless they could not be created (the directory
    in the way is missing or not writable), which is an error. Everything is
    checked as the user running this, so run it as the service's user.

    Args:
        config: a validated configuration (relative paths are relative to
            the current directory, as for the server).

    Returns:
        The errors (each a :class:`ConfigError` naming the key path and the
        path) and the notes.
    """
    checks = _PathChecks(config)
    _check_read_files(checks)
    if _check_data_dir(checks):
        # Below a broken data_dir every one of these would repeat its error.
        _check_state_files(checks)
    if config.server.json_log:
        checks.created_file(("server", "json_log"), config.server.json_log,
                            "made at the first start", writable=True)
    return PathReport(tuple(checks.errors), tuple(checks.notes))


@dataclass
class _PathChecks:
    """What :func:`check_paths` found so far, and its two kinds of check."""

    config: Config
    errors: list[ConfigError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def err(self, key: tuple[str, ...], msg: str) -> None:
        """An error about the path at ``key``."""
        self.errors.append(ConfigError(msg, key, self.config.source))

    def read(self, key: tuple[str, ...], value: str) -> None:
        """A file the server only reads: it must exist and be readable ("" is unset)."""
        if value:
            problem = _input_file(_absolute(value))
            if problem:
                self.err(key, problem)

    def created_file(self, key: tuple[str, ...], path: str, what: str, *,
                     writable: bool = False) -> None:
        """A file the server makes at its first start: usable if present, else creatable
        (a note saying ``what`` happens then)."""
        path = _absolute(path)
        if os.path.isdir(path):
            self.err(key, f"{path}: is a directory, expected a file")
        elif os.path.exists(path):
            mode = os.R_OK | (os.W_OK if writable else 0)
            if not os.access(path, mode):
                self.err(key, f"{path}: not {'writable' if writable else 'readable'} "
                              "by this user")
        else:
            problem = _creatable(path)
            if problem:
                self.err(key, f"{path}: does not exist and {problem}")
            else:
                self.notes.append(f"{_format_path(key)} {path}: does not exist yet; {what}")


def _check_read_files(checks: _PathChecks) -> None:
    """The files the server only reads: certificates, keys, users, rules, secrets."""
    config = checks.config
    for section in ("submission", "bounce"):
        block = getattr(config, section)
        checks.read((section, "tls_certificate"), block.tls_certificate)
        checks.read((section, "tls_key"), block.tls_key)
    checks.read(("submission", "users_file"), config.submission.users_file)
    for i, rules in enumerate(config.bounce.rules_files):
        checks.read(("bounce", f"rules_files[{i}]"), rules)
    for i, dkim in enumerate(config.delivery.dkim):
        checks.read(("delivery", f"dkim[{i}]", "key_file"), dkim.key_file)
    for i, hook in enumerate(config.webhooks):
        checks.read((f"webhooks[{i}]", "secret_file"), hook.secret_file)
    if config.admin.enabled:
        checks.read(("admin", "authorized_keys"), config.admin.authorized_keys)


def _check_data_dir(checks: _PathChecks) -> bool:
    """The data directory: a usable directory, or one the server can make. True if usable."""
    # The data directory may be missing: the server makes it (0700) at start,
    # as systemd's StateDirectory or a first `twistd -n hurricane` expect.
    data_dir = checks.config.data_dir
    if os.path.exists(data_dir):
        if not os.path.isdir(data_dir):
            checks.err(("server", "data_dir"), f"{data_dir}: not a directory")
            return False
        if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
            checks.err(("server", "data_dir"), f"{data_dir}: not writable by this user")
            return False
        return True
    problem = _creatable(data_dir)
    if problem:
        checks.err(("server", "data_dir"), f"{data_dir}: does not exist and {problem}")
        return False
    checks.notes.append(f"[server] data_dir {data_dir}: does not exist yet; created "
                        "(mode 0700) at the first start")
    return True


def _check_state_files(checks: _PathChecks) -> None:
    """The files the server makes under (or beside) a usable data directory."""
    config = checks.config
    data_dir = config.data_dir
    checks.created_file(("bounce", "keys_file"), config.verp_keys_file,
                        "a first key is made at the first start (nodes sharing a database "
                        "need the same file: copy it to the others before they start)")
    sqlite_path = _sqlite_file(config)
    if sqlite_path is not None:
        checks.created_file(("store", "url") if config.store.url else ("server", "data_dir"),
                            sqlite_path,
                            "an empty database is made at the first start or by "
                            "'hurricane migrate'", writable=True)
    if config.admin.enabled:
        checks.created_file(("admin", "host_key"), config.admin.host_key or os.path.join(
            data_dir, "admin_ssh_host_ed25519_key"), "made at the first start")
    if config.accounting.enabled:
        checks.created_file(("accounting", "file"), config.accounting.file or os.path.join(
            data_dir, "accounting.jsonl"), "made at the first start", writable=True)
