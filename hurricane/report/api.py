"""The JSON API under ``/api/v1``: inject messages, read outcomes, manage suppressions.

Endpoints (bearer token, see :mod:`hurricane.report.auth`), one resource each
in the tree :func:`build_api` makes:

- ``POST /api/v1/messages``: inject; answers 201 with the queue id after commit;
- ``GET /api/v1/messages/<queue id>``: the message and its recipients;
- ``GET /api/v1/deliveries/<delivery id>``: one recipient with every event;
- ``GET /api/v1/recipients/<address>``: deliveries to an address (``before``, ``limit``);
- ``GET /api/v1/mailings/<mailing id>``: the mailing's summary and rates;
- ``GET /api/v1/mailings/<mailing id>/recipients``: one page of its recipients
  (``state``, ``stream`` filters; every delivery carries its ``stream``);
- ``GET /api/v1/summary?since=&until=``: summary, rates and queue depth for a window;
- ``GET|POST /api/v1/suppressions``, ``GET|DELETE /api/v1/suppressions/<address>``
  (a ``scope``: ``global`` by default, ``stream:NAME``, ``mailing:ID``, ``domain``).

Under ``/api/v1`` the token is checked first; then an unknown endpoint is
404, and an unknown method or sub-path of a known one 405. Outside
``/api/v1`` every path is 404, before any token check. Errors are
``{"error": message, "field": name-or-null}`` with 400 (naming the field),
401, 403, 404, 405, 413 or 503 (store unavailable). Suppressions and the
recipient lookup are :class:`~hurricane.operations.Operations`' (the same
checks and messages as the report's forms, the console and the command).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import parseaddr
from typing import ClassVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from hurricane.model import Delivery, Event, NewMessage, NewRecipient, State
from hurricane.operations import InvalidRequest, Operations, parse_address
from hurricane.outcome import Action, Phase
from hurricane.policy.operate import NoPolicyStore
from hurricane.report.auth import AccessPolicy, Denied
from hurricane.report.figures import summary_json
from hurricane.report.resource import (
    HttpError,
    ReportResource,
    arg,
    run_async,
    segment,
    write_json,
)
from hurricane.smtpd.reply import ReplyError
from hurricane.store.interface import IOutcomeStore
from hurricane.streams import DEFAULT_STREAM
from hurricane.submission.message import (
    MAILING_ID_HEADER,
    MESSAGE_ID_HEADER,
    prepare_message,
    stream_of,
)
from hurricane.verp import check_identifiers

__all__ = ["Api", "Endpoint", "build_api", "parse_time", "delivery_json", "event_explanation",
           "event_json"]

log = Logger()

MIB = 1024 * 1024
#: The largest body of POST /api/v1/suppressions (an address, a reason, a note).
SUPPRESSION_BODY_LIMIT = 64 * 1024
#: JSON fields accepted by POST /api/v1/messages.
INJECT_FIELDS = frozenset({"stream", "sender", "recipients", "raw", "raw_base64", "from", "subject",
                           "text", "html", "headers", "mailing_id", "message_id", "metadata"})

Handler = Callable[[Request], Awaitable[None]]


def parse_time(value: str | None, field: str) -> float | None:
    """A time argument: epoch seconds or ISO 8601 (UTC when no zone is given).

    Raises:
        HttpError: 400 naming ``field``.
    """
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HttpError(400, f"{field}: expected epoch seconds or an ISO 8601 time",
                        field) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def int_arg(request: Request, name: str, default: int | None, low: int = 0,
            high: int = 2 ** 62) -> int | None:
    """An integer argument within [low, high].

    Raises:
        HttpError: 400 naming the argument.
    """
    value = arg(request, name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise HttpError(400, f"{name}: expected an integer", name) from None
    if not low <= number <= high:
        raise HttpError(400, f"{name}: must be between {low} and {high}", name)
    return number


def delivery_json(d: Delivery) -> dict[str, object]:
    """A delivery for the API (lease fields left out)."""
    out = dataclasses.asdict(d)
    out["state"] = d.state.value if hasattr(d.state, "value") else d.state
    out.pop("lease_owner", None)
    out.pop("lease_until", None)
    out["stream"] = d.stream or DEFAULT_STREAM
    return out


def event_json(e: Event) -> dict[str, object]:
    """An event for the API."""
    out = dataclasses.asdict(e)
    for key in ("kind", "state"):
        value = out[key]
        out[key] = getattr(value, "value", value)
    # the classifier's explanation of a refusal in our session, as an object
    # (the recipient page's "Why")
    out["explanation"] = event_explanation(e)
    return out


def event_explanation(e: Event) -> dict[str, object] | None:
    """The explanation of a refusal or deferral a server gave in our own session.

    The part recorded with the attempt (:func:`hurricane.decisions.explain_reply`)
    completed by the event's own columns (code, status, text, remote host,
    rule, state, ``hard``) and by its phase (the command our client was
    sending and its stage), under the keys of a returned message's result
    (``hurricane.bounce.model.RecipientResult``), so the recipient page
    shows both alike.

    Returns:
        The explanation; None for an event without one, or one that does not read.
    """
    if not e.explanation:
        return None
    try:
        recorded = json.loads(e.explanation)
    except ValueError:
        return None
    if not isinstance(recorded, dict):
        return None
    phase = str(recorded.get("phase") or "")
    try:
        known = Phase(phase)
        stage, command = known.stage, known.command
    except ValueError:
        stage, command = None, None
    action = Action.failed if e.state is State.failed else Action.delayed
    return {"action": action.value,
            "stage": stage.value if stage is not None else phase or None,
            "stage_source": "session", "command": command or phase or None,
            "code": None if e.code is None else str(e.code), "status": e.status,
            "status_inferred": False, "diagnostic_type": "smtp", "diagnostic": e.text,
            "remote_mta": e.remote_host, "source": "smtp", "rule": e.rule, "hard": e.hard,
            "reason": e.reason, "runner_up": None, "runner_up_rule": None, **recorded}


def invalid(e: InvalidRequest) -> HttpError:
    """The operations' refusal as a 400 naming the field."""
    return HttpError(400, e.message, e.field)


def _address(value: object, field: str) -> str:
    """An address of an injection (recipient or sender): the operations' one check."""
    try:
        return parse_address(value, field)
    except InvalidRequest as e:
        raise invalid(e) from None


def read_json(request: Request, limit: int) -> dict[str, object]:
    """The request body as a JSON object.

    Raises:
        HttpError: 413 over ``limit`` bytes, 400 for anything but an object.
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(413, f"request body larger than {limit} bytes")
    content = request.content
    body = content.read(limit + 1) if content is not None else b""
    if len(body) > limit:
        raise HttpError(413, f"request body larger than {limit} bytes")
    try:
        data = json.loads(body or b"null")
    except ValueError as e:
        raise HttpError(400, f"body: invalid JSON ({e})", "body") from None
    if not isinstance(data, dict):
        raise HttpError(400, "body: expected a JSON object", "body")
    return data


def api_error(request: Request, code: int, message: str, field: str | None,
              challenge: bytes | None) -> None:
    """An error answer as JSON (the ``on_error`` of :func:`~.resource.run_async`)."""
    if challenge is not None:
        request.setHeader(b"www-authenticate", challenge)
    write_json(request, code, {"error": message, "field": field})


class Api:
    """What every endpoint shares.

    Args:
        store: the IOutcomeStore (reads and injection).
        clock: the injected clock (submission time, the default summary window).
        access: the access policy.
        operations: suppressions and the recipient lookup.
        hostname: our name, for Message-IDs we add.
        on_enqueued: called after each committed injection (the scheduler's wake()).
        max_message_size: largest message accepted (bytes).
        max_recipients: most recipients per message.
    """

    def __init__(self, store: IOutcomeStore, clock: IReactorTime, access: AccessPolicy,
                 operations: Operations, hostname: str, on_enqueued: Callable[[], None], *,
                 max_message_size: int = 25 * MIB, max_recipients: int = 100) -> None:
        self.store = store
        self.clock = clock
        self.access = access
        self.operations = operations
        self.hostname = hostname
        self.on_enqueued = on_enqueued
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients

    @property
    def inject_body_limit(self) -> int:
        """The largest injection body: the message in JSON (escaped or base64) plus fields."""
        return self.max_message_size * 2 + MIB


class Endpoint(ReportResource):
    """A resource under ``/api/v1``: the token first, then its methods.

    Subclasses return their handlers by method from :meth:`handlers`.

    Args:
        api: what the endpoints share.
    """

    #: True below a known endpoint: an unknown method or sub-path is 405
    #: there; elsewhere (``/api/v1`` itself, unknown endpoints) it is 404.
    known: ClassVar[bool] = True

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def handlers(self) -> Mapping[str, Handler]:
        """The handler of each method this resource answers."""
        return {}

    def render(self, request: Request) -> int:
        """Every method goes through :meth:`handle`."""
        return run_async(request, self.handle, api_error)

    async def handle(self, request: Request) -> None:
        """Check the token, then answer the method."""
        method = request.method.decode("ascii", "replace")
        await self.api.access.api_client(request, method not in ("GET", "HEAD"))
        handler = self.handlers().get(method)
        if handler is None:
            if self.known:
                raise HttpError(405, f"{method} is not allowed here")
            raise HttpError(404, "no such endpoint")
        await handler(request)

    async def authorize(self, request: Request, method: bytes) -> None:
        """The token check (a write for every method but GET and HEAD)."""
        await self.api.access.api_client(request, method not in (b"GET", b"HEAD"))

    def refusal(self, denied: Denied) -> tuple[bytes, bytes]:
        """An early refusal in the API's JSON error form."""
        body = json.dumps({"error": denied.message, "field": None}).encode("utf-8") + b"\n"
        return b"application/json", body

    def missing(self, path: bytes) -> Resource:
        """An unknown sub-path: 405 below a known endpoint, else 404."""
        return _Known(self.api) if self.known else _Unknown(self.api)


class _Known(Endpoint):
    """A sub-path of a known endpoint that names nothing: 405 for every method."""


class _Unknown(Endpoint):
    """A path under ``/api/v1`` that names no endpoint: 404 for every method."""

    known = False


class Outside(Endpoint):
    """``/api`` and every path under it outside ``/api/v1``: 404, before any token check."""

    known = False

    async def handle(self, request: Request) -> None:
        """404, naming where the API is."""
        raise HttpError(404, "no such endpoint (the API is under /api/v1)")

    def missing(self, path: bytes) -> Resource:
        """The same answer for any deeper path."""
        return self


class Items(Endpoint):
    """An endpoint whose children are identifiers (``/deliveries/<id>``...).

    Args:
        api: what the endpoints share.
        child: makes the resource of one identifier.
    """

    def __init__(self, api: Api, child: type[Item]) -> None:
        super().__init__(api)
        self.child = child

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """The resource of the identifier ``path``."""
        if path == b"":
            return super().getChild(path, request)
        return self.child(self.api, segment(path))


class Item(Endpoint):
    """The resource of one identifier.

    Args:
        api: what the endpoints share.
        key: the identifier, as the path gave it.
    """

    def __init__(self, api: Api, key: str) -> None:
        super().__init__(api)
        self.key = key


# -- injection -------------------------------------------------------------------


class Messages(Items):
    """``/api/v1/messages``: inject (POST); its children are the messages."""

    def __init__(self, api: Api) -> None:
        super().__init__(api, MessageItem)

    def handlers(self) -> Mapping[str, Handler]:
        """POST injects."""
        return {"POST": self.inject}

    def body_limit(self, method: bytes) -> int:
        """The message in JSON (escaped or base64) plus the fields."""
        return self.api.inject_body_limit if method == b"POST" else 0

    @staticmethod
    def _build_message(data: Mapping[str, object]) -> bytes:
        """The RFC 5322 bytes of an injection request (raw, or built from parts)."""
        if "raw" in data or "raw_base64" in data:
            if "raw" in data and "raw_base64" in data:
                raise HttpError(400, "raw: give raw or raw_base64, not both", "raw")
            if "raw" in data:
                if not isinstance(data["raw"], str):
                    raise HttpError(400, "raw: expected a string", "raw")
                raw = data["raw"].encode("utf-8")
            else:
                try:
                    encoded = data["raw_base64"]
                    if not isinstance(encoded, str):  # a JSON number, list...: not base64
                        raise TypeError(type(encoded).__name__)
                    raw = base64.b64decode(encoded, validate=True)
                except (ValueError, TypeError):
                    raise HttpError(400, "raw_base64: invalid base64", "raw_base64") from None
            for name in ("subject", "text", "html", "headers", "from"):
                if name in data:
                    raise HttpError(400, f"{name}: not allowed with a raw message", name)
            # Normalise line endings to CRLF (the store keeps wire format).
            return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        msg = EmailMessage(policy=SMTP)
        sender = data.get("from")
        if not isinstance(sender, str) or not sender.strip():
            raise HttpError(400, "from: required (the From header) unless raw is given", "from")
        for name in ("subject", "text", "html"):
            if name in data and not isinstance(data[name], str):
                raise HttpError(400, f"{name}: expected a string", name)
        if "text" not in data and "html" not in data:
            raise HttpError(400, "text: give text and/or html (or raw)", "text")
        headers = data.get("headers", {})
        if not isinstance(headers, dict):
            raise HttpError(400, "headers: expected an object of name: value", "headers")
        try:
            msg["From"] = sender
            if "subject" in data:
                msg["Subject"] = data["subject"]
            for name, value in headers.items():
                if (not isinstance(value, str) or not name or any(c in name for c in ": \r\n")
                        or "\r" in value or "\n" in value):
                    raise HttpError(400, f"headers: invalid header {name!r}", "headers")
                if name.lower() in ("from", "subject", "content-type",
                                    "content-transfer-encoding", "mime-version"):
                    raise HttpError(400, f"headers: {name} is set by its own field", "headers")
                msg[name] = value
            if "text" in data:
                msg.set_content(data["text"])
                if "html" in data:
                    msg.add_alternative(data["html"], subtype="html")
            else:
                msg.set_content(data["html"], subtype="html")
            return msg.as_bytes()
        except HttpError:
            raise
        except (ValueError, TypeError) as e:
            raise HttpError(400, f"headers: {e}", "headers") from None

    @staticmethod
    def _add_identifiers(raw: bytes, mailing_id: str | None, message_id: str | None) -> bytes:
        added = b""
        for header, value in ((MAILING_ID_HEADER, mailing_id), (MESSAGE_ID_HEADER, message_id)):
            if value is not None:
                added += f"{header}: {value}\r\n".encode("ascii")
        return added + raw

    @staticmethod
    def _recipients(recipients: object, max_recipients: int) -> list[NewRecipient]:
        """The ``recipients`` field: one address or a list, duplicates merged."""
        if isinstance(recipients, str):
            recipients = [recipients]
        if not isinstance(recipients, list) or not recipients:
            raise HttpError(400, "recipients: expected a non-empty list of addresses",
                            "recipients")
        if len(recipients) > max_recipients:
            raise HttpError(400, f"recipients: at most {max_recipients} per message",
                            "recipients")
        seen: set[str] = set()
        rcpts = []
        for value in recipients:
            address = _address(value, "recipients")
            if address.lower() not in seen:  # the same address twice is one delivery
                seen.add(address.lower())
                rcpts.append(NewRecipient(address))
        return rcpts

    @staticmethod
    def _identifiers(data: dict[str, object]) -> dict[str, str | None]:
        """The ``mailing_id`` and ``message_id`` fields, checked alone and together."""
        ids: dict[str, str | None] = {}
        for field in ("mailing_id", "message_id"):
            value = data.get(field)
            if value is not None and not isinstance(value, str):
                raise HttpError(400, f"{field}: expected a string", field)
            ids[field] = value
            problem = check_identifiers(value, None) if field == "mailing_id" else \
                check_identifiers(None, value)
            if value is not None and problem:
                raise HttpError(400, f"{field}: {problem}", field)
        problem = check_identifiers(ids["mailing_id"], ids["message_id"])
        if problem:
            raise HttpError(400, f"mailing_id and message_id: {problem}", "message_id")
        return ids

    async def inject(self, request: Request) -> None:
        """POST /api/v1/messages: validate, enqueue, answer with the queue id after commit."""
        api = self.api
        now = api.clock.seconds()
        data = read_json(request, api.inject_body_limit)
        unknown = sorted(set(data) - INJECT_FIELDS)
        if unknown:
            raise HttpError(400, f"{unknown[0]}: unknown field", unknown[0])
        rcpts = self._recipients(data.get("recipients"), api.max_recipients)
        ids = self._identifiers(data)
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise HttpError(400, "metadata: expected a JSON object", "metadata")
        if len(json.dumps(metadata)) > 64 * 1024:
            raise HttpError(400, "metadata: larger than 64 KiB", "metadata")
        stream = data.get("stream")
        if stream is not None and not isinstance(stream, str):
            raise HttpError(400, "stream: expected a stream name", "stream")
        known = api.operations.streams
        try:
            stream_name = stream_of(stream, None if known is None else known.names())
        except ReplyError as e:
            raise HttpError(400, f"stream: {e.reply.text.split(': ', 2)[-1]}", "stream") from None
        raw = self._build_message(data)
        raw = self._add_identifiers(raw, ids["mailing_id"], ids["message_id"])
        if len(raw) > api.max_message_size:
            raise HttpError(413, f"message larger than {api.max_message_size} bytes")
        try:
            prepared = prepare_message(raw, hostname=api.hostname, now=now,
                                       streams=None if known is None else known.names())
        except ReplyError as e:
            text = e.reply.text
            field = ("mailing_id" if "Mailing-Id" in text else "message_id"
                     if "Message-Id" in text else "raw")
            raise HttpError(400, f"{field}: {text}", field) from None
        sender = data.get("sender")
        if sender is None:
            sender = parseaddr(str(data.get("from") or ""))[1]
            if sender:
                try:
                    sender = _address(sender, "from")
                except HttpError:
                    sender = ""
        elif sender != "":
            sender = _address(sender, "sender")
        # Already checked by handle(): a cache hit, never a second verification.
        client = f"api token={await api.access.api_client(request, True)}"
        message = NewMessage(
            sender=sender, recipients=tuple(rcpts), body=prepared.body,
            mailing_id=prepared.mailing_id, message_id=prepared.message_id,
            header_message_id=prepared.header_message_id, source="api", client=client,
            metadata=metadata,
            # The field wins; without it the raw message's X-Hurricane-Stream.
            stream=stream_name if stream is not None else prepared.stream)
        result = await api.store.enqueue(message, now)
        log.info("queued {queue_id} from {client} for {count} recipients",
                 queue_id=result.queue_id, client=client, count=len(rcpts))
        try:
            api.on_enqueued()
        except Exception:
            # Committed already: a failing hook must not turn that into an error.
            log.failure("on_enqueued hook failed")
        request.setHeader(b"location", f"/api/v1/messages/{result.queue_id}".encode("ascii"))
        write_json(request, 201, {
            "queue_id": result.queue_id,
            "mailing_id": prepared.mailing_id,
            "message_id": prepared.message_id,
            "header_message_id": prepared.header_message_id,
            "stream": message.stream,
            "recipients": [
                {"address": r.address, "delivery_id": r.delivery_id,
                 "state": getattr(r.state, "value", r.state), "reason": r.reason}
                for r in result.recipients
            ],
        })


class MessageItem(Item):
    """``GET /api/v1/messages/<queue id>``: the message and its recipients."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """The message and its recipients."""
        store = self.api.store
        message = await store.get_message(self.key)
        if message is None:
            raise HttpError(404, f"no message with queue id {self.key}")
        deliveries = await store.search_deliveries(queue_id=message.queue_id, limit=1000)
        body = dataclasses.asdict(message)
        body.pop("message_pk", None)
        body["recipients"] = [delivery_json(d) for d in reversed(deliveries)]
        write_json(request, 200, body)


# -- reading ----------------------------------------------------------------------


class DeliveryItem(Item):
    """``GET /api/v1/deliveries/<id>``: the delivery and its events."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """The delivery and its events."""
        if not self.key.isdigit():
            raise HttpError(400, "delivery_id: expected an integer", "delivery_id")
        delivery = await self.api.store.get_delivery(int(self.key))
        if delivery is None:
            raise HttpError(404, f"no delivery {self.key}")
        events = await self.api.operations.events(delivery.delivery_id)
        body = delivery_json(delivery)
        body["events"] = [event_json(e) for e in events]
        write_json(request, 200, body)


class RecipientItem(Item):
    """``GET /api/v1/recipients/<address>``: deliveries to it, newest first."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """One page of the address's deliveries (:meth:`Operations.find`)."""
        limit = int_arg(request, "limit", 100, 1, 1000)
        before = int_arg(request, "before", None, 1)
        assert limit is not None  # it has a default
        try:
            found = await self.api.operations.find(self.key, limit=limit, before=before)
        except InvalidRequest as e:
            raise invalid(e) from None
        write_json(request, 200, {
            "recipient": self.key, "deliveries": [delivery_json(d) for d in found],
            "next_before": found[-1].delivery_id if len(found) == limit else None,
        })


class MailingItem(Item):
    """``GET /api/v1/mailings/<id>``: summary and rates; ``.../recipients`` is a child."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """``recipients``: one page of the mailing's recipients."""
        if path == b"recipients":
            return MailingRecipients(self.api, self.key)
        if path in (b"release", b"cancel", b"hold"):
            return MailingHoldEndpoint(self.api, self.key, path.decode("ascii"))
        return super().getChild(path, request)

    async def get(self, request: Request) -> None:
        """The mailing's summary and rates."""
        summary = await self.api.store.mailing_summary(self.key)
        if summary.recipients == 0:
            raise HttpError(404, f"no mailing {self.key}")
        write_json(request, 200, {"mailing_id": self.key, **summary_json(summary)})


class MailingRecipients(Item):
    """``GET /api/v1/mailings/<id>/recipients``: one page, newest first."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """One page of the mailing's recipients (``state``, ``stream``, ``before``, ``limit``)."""
        limit = int_arg(request, "limit", 100, 1, 1000)
        before = int_arg(request, "before", None, 1)
        state = arg(request, "state") or None
        assert limit is not None  # it has a default
        found = await self.api.store.search_deliveries(
            mailing_id=self.key, state=state, before_delivery_id=before, limit=limit,
            stream=arg(request, "stream") or None)
        write_json(request, 200, {
            "mailing_id": self.key, "deliveries": [delivery_json(d) for d in found],
            "next_before": found[-1].delivery_id if len(found) == limit else None,
        })


class MailingHoldEndpoint(Item):
    """``/api/v1/mailings/<id>/hold`` (GET: the breaker and counts),
    ``.../release`` and ``.../cancel`` (POST: :meth:`Operations.release_mailing`,
    :meth:`Operations.cancel_mailing`; issue 19)."""

    def __init__(self, api: Api, key: str, verb: str) -> None:
        super().__init__(api, key)
        self.verb = verb

    def handlers(self) -> Mapping[str, Handler]:
        """GET on hold, POST on release and cancel."""
        return {"GET": self.get} if self.verb == "hold" else {"POST": self.post}

    async def get(self, request: Request) -> None:
        """The mailing's breaker and counts."""
        try:
            hold = await self.api.operations.mailing_hold(self.key)
        except InvalidRequest as e:
            raise invalid(e) from None
        except NoPolicyStore as e:
            raise HttpError(409, str(e)) from None
        write_json(request, 200, hold.as_json())

    async def post(self, request: Request) -> None:
        """Release or cancel the held recipients: 200 with the count."""
        ops = self.api.operations
        try:
            if self.verb == "release":
                count = await ops.release_mailing(self.key, "api")
            else:
                count = await ops.cancel_mailing(self.key, "api")
        except InvalidRequest as e:
            raise invalid(e) from None
        except NoPolicyStore as e:
            raise HttpError(409, str(e)) from None
        write_json(request, 200, {"mailing_id": self.key, "action": self.verb, "count": count})


class ProvidersEndpoint(Endpoint):
    """``GET /api/v1/providers``: every provider's limits as they adapted (issue 19)."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """The providers and their recent actions."""
        write_json(request, 200, {"providers": await self.api.operations.providers()})


class SummaryEndpoint(Endpoint):
    """``GET /api/v1/summary?since=&until=``: window summary, rates and queue depth."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """The summary of the window (the last day by default)."""
        until = parse_time(arg(request, "until"), "until")
        since = parse_time(arg(request, "since"), "since")
        if since is None and until is None:
            until = self.api.clock.seconds()
            since = until - 86400
        summary = await self.api.store.summary(since, until)
        depth = await self.api.store.queue_depth()
        write_json(request, 200, {"since": since, "until": until, **summary_json(summary),
                                  "queue_depth": depth})


# -- suppressions -------------------------------------------------------------------


class Suppressions(Items):
    """``/api/v1/suppressions``: list (GET) and add (POST); the addresses are children."""

    def __init__(self, api: Api) -> None:
        super().__init__(api, SuppressionItem)

    def handlers(self) -> Mapping[str, Handler]:
        """GET lists, POST adds."""
        return {"GET": self.list_page, "POST": self.add}

    def body_limit(self, method: bytes) -> int:
        """An address, a reason and a note."""
        return SUPPRESSION_BODY_LIMIT if method == b"POST" else 0

    async def list_page(self, request: Request) -> None:
        """One page of the list (``after``, ``limit``)."""
        limit = int_arg(request, "limit", 1000, 1, 10000)
        assert limit is not None  # it has a default
        scope = arg(request, "scope") or None
        if scope is not None and scope != "global":
            # One scope's entries (issue 20), paged by address within it.
            after = arg(request, "after") or None
            try:
                entries = await self.api.operations.list_suppressions(
                    scope, (scope, after) if after else None, limit)
            except InvalidRequest as e:
                raise invalid(e) from None
            write_json(request, 200, {
                "suppressions": [e.as_dict() for e in entries],
                "next_after": entries[-1].address if len(entries) == limit else None,
            })
            return
        page = await self.api.operations.suppressions(after=arg(request, "after") or None,
                                                      limit=limit)
        write_json(request, 200, {
            "suppressions": [dataclasses.asdict(s) for s in page],
            "next_after": page[-1].address if len(page) == limit else None,
        })

    async def add(self, request: Request) -> None:
        """Add an address (:meth:`Operations.suppress`): 201, or 200 when already there."""
        data = read_json(request, SUPPRESSION_BODY_LIMIT)
        if data.get("scope") not in (None, "global"):
            try:
                scoped = await self.api.operations.suppress_scoped(
                    data.get("address"), data.get("scope"), data.get("reason", "operator"),
                    data.get("note"))
            except InvalidRequest as e:
                raise invalid(e) from None
            entry = next((e for e in scoped.entries if e.scope == scoped.scope), None)
            write_json(request, 201 if scoped.changed else 200,
                       {"added": scoped.changed,
                        "suppression": entry.as_dict() if entry else None})
            return
        try:
            result = await self.api.operations.suppress(
                data.get("address"), data.get("reason", "operator"), data.get("note"))
        except InvalidRequest as e:
            raise invalid(e) from None
        write_json(request, 201 if result.added else 200,
                   {"added": result.added, "suppression": dataclasses.asdict(result.entry)
                    if result.entry else None})


class SuppressionItem(Item):
    """``/api/v1/suppressions/<address>``: read (GET) or remove (DELETE) one entry."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET reads, DELETE removes."""
        return {"GET": self.get, "DELETE": self.delete}

    async def get(self, request: Request) -> None:
        """The entry, or 404."""
        try:
            entry = await self.api.operations.suppression(self.key)
            entries = await self.api.operations.suppression_entries(self.key)
        except InvalidRequest as e:
            raise invalid(e) from None
        if not entries:
            raise HttpError(404, f"{self.key} is not suppressed")
        # The global entry's fields as before, and every entry with its scope.
        body = dataclasses.asdict(entry) if entry is not None else {"address": self.key}
        write_json(request, 200, {**body, "entries": [e.as_dict() for e in entries]})

    async def delete(self, request: Request) -> None:
        """Remove the entry (:meth:`Operations.unsuppress`), or 404."""
        scope = arg(request, "scope") or None
        try:
            result = await self.api.operations.unsuppress_scoped(self.key, scope)
        except InvalidRequest as e:
            raise invalid(e) from None
        if not result.changed:
            raise HttpError(404, f"{self.key} is not suppressed"
                            + ("" if result.scope == "global" else f" in {result.scope}"))
        write_json(request, 200, {"removed": result.address, "scope": result.scope})


class V1(Endpoint):
    """``/api/v1``: the endpoints are its children; itself it is 404."""

    known = False


def build_api(api: Api) -> Resource:
    """The ``/api`` tree."""
    v1 = V1(api)
    v1.putChild(b"messages", Messages(api))
    v1.putChild(b"deliveries", Items(api, DeliveryItem))
    v1.putChild(b"recipients", Items(api, RecipientItem))
    v1.putChild(b"mailings", Items(api, MailingItem))
    v1.putChild(b"summary", SummaryEndpoint(api))
    v1.putChild(b"providers", ProvidersEndpoint(api))
    v1.putChild(b"suppressions", Suppressions(api))
    from hurricane.report.sources import SourcesEndpoint
    v1.putChild(b"sources", SourcesEndpoint(api))
    root = Outside(api)
    root.putChild(b"v1", v1)
    return root
