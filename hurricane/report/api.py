"""The JSON API under ``/api/v1``: inject messages, read outcomes, manage suppressions.

Endpoints (bearer token, see :mod:`hurricane.report.auth`):

- ``POST /api/v1/messages``: inject; answers 201 with the queue id after commit;
- ``GET /api/v1/messages/<queue id>``: the message and its recipients;
- ``GET /api/v1/deliveries/<delivery id>``: one recipient with every event;
- ``GET /api/v1/recipients/<address>``: deliveries to an address (``before``, ``limit``);
- ``GET /api/v1/mailings/<mailing id>``: the mailing's summary and rates;
- ``GET /api/v1/mailings/<mailing id>/recipients``: one page of its recipients;
- ``GET /api/v1/summary?since=&until=``: summary, rates and queue depth for a window;
- ``GET|POST /api/v1/suppressions``, ``GET|DELETE /api/v1/suppressions/<address>``.

Errors are ``{"error": message, "field": name-or-null}`` with 400 (naming the
field), 401, 403, 404, 405, 413 or 503 (store unavailable).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import UTC
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import parseaddr
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from hurricane.model import Delivery, Event, NewMessage, NewRecipient
from hurricane.report.auth import AccessPolicy
from hurricane.report.figures import summary_json
from hurricane.report.resource import HttpError, arg, run_async, write_json
from hurricane.smtpd.address import parse_path
from hurricane.smtpd.reply import ReplyError
from hurricane.submission.message import (
    MAILING_ID_HEADER,
    MESSAGE_ID_HEADER,
    prepare_message,
)
from hurricane.verp import check_identifiers

__all__ = ["ApiResource", "parse_time", "delivery_json", "event_json"]

log = Logger()

MIB = 1024 * 1024
#: The largest body of POST /api/v1/suppressions (an address, a reason, a note).
SUPPRESSION_BODY_LIMIT = 64 * 1024
#: JSON fields accepted by POST /api/v1/messages.
INJECT_FIELDS = frozenset({"sender", "recipients", "raw", "raw_base64", "from", "subject",
                           "text", "html", "headers", "mailing_id", "message_id", "metadata"})


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


def delivery_json(d: Delivery) -> dict[str, Any]:
    """A delivery for the API (lease fields left out)."""
    out = dataclasses.asdict(d)
    out["state"] = d.state.value if hasattr(d.state, "value") else d.state
    out.pop("lease_owner", None)
    out.pop("lease_until", None)
    return out


def event_json(e: Event) -> dict[str, Any]:
    """An event for the API."""
    out = dataclasses.asdict(e)
    for key in ("kind", "state"):
        value = out[key]
        out[key] = getattr(value, "value", value)
    return out


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, f"{field}: expected an address", field)
    try:
        path, rest = parse_path(f"<{value.strip()}>", "recipient")
    except ReplyError as e:
        raise HttpError(400, f"{field}: invalid address {value!r} ({e.reply.text})",
                        field) from None
    if rest or path.is_null or path.domain is None:
        raise HttpError(400, f"{field}: address must be fully qualified: {value!r}", field)
    return path.address


class ApiResource(Resource):
    """``/api/v1``: every endpoint; dispatches on the path itself.

    Args:
        store: the IOutcomeStore.
        clock: the injected clock (submission time).
        access: the access policy.
        hostname: our name, for Message-IDs we add.
        on_enqueued: called after each committed injection (the scheduler's wake()).
        max_message_size: largest message accepted (bytes).
        max_recipients: most recipients per message.
    """

    isLeaf = True

    def __init__(self, store: Any, clock: IReactorTime, access: AccessPolicy, hostname: str,
                 on_enqueued: Callable[[], None], max_message_size: int = 25 * MIB,
                 max_recipients: int = 100) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.access = access
        self.hostname = hostname
        self.on_enqueued = on_enqueued
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients

    def render(self, request: Request) -> Any:
        """Every method goes through :meth:`handle`."""
        return run_async(request, self.handle, self._error)

    @staticmethod
    def _error(request: Request, code: int, message: str, field: str | None,
               challenge: bytes | None) -> None:
        if challenge is not None:
            request.setHeader(b"www-authenticate", challenge)
        write_json(request, code, {"error": message, "field": field})

    @staticmethod
    def _parts(postpath: list[bytes]) -> list[str]:
        """The path segments after ``/api`` as text, without trailing empty ones."""
        parts = [unquote(p.decode("utf-8", "replace")) for p in postpath]
        while parts and parts[-1] == "":
            parts.pop()
        return parts

    def body_limit(self, method: bytes, postpath: list[bytes]) -> int:
        """The largest request body the endpoint takes (0: none).

        The request gate (:mod:`hurricane.report.web`) refuses a bigger one
        before reading it.

        Args:
            method: the request method.
            postpath: the path segments after ``/api``, as Twisted splits them.
        """
        if method != b"POST":
            return 0
        parts = self._parts(postpath)
        if parts == ["v1", "messages"]:
            return self.inject_body_limit
        if parts == ["v1", "suppressions"]:
            return SUPPRESSION_BODY_LIMIT
        return 0

    @property
    def inject_body_limit(self) -> int:
        """The largest injection body: the message in JSON (escaped or base64) plus fields."""
        return self.max_message_size * 2 + MIB

    async def handle(self, request: Request) -> None:
        """Route by method and path."""
        parts = self._parts(request.postpath or [])
        if parts[:1] != ["v1"]:
            raise HttpError(404, "no such endpoint (the API is under /api/v1)")
        parts = parts[1:]
        method = request.method.decode("ascii", "replace")
        write = method not in ("GET", "HEAD")
        await self.access.api_client(request, write)
        head = parts[0] if parts else ""
        rest = parts[1:]
        if head == "messages" and not rest and method == "POST":
            return await self.inject(request)
        if head == "messages" and len(rest) == 1 and method == "GET":
            return await self.get_message(request, rest[0])
        if head == "deliveries" and len(rest) == 1 and method == "GET":
            return await self.get_delivery(request, rest[0])
        if head == "recipients" and len(rest) == 1 and method == "GET":
            return await self.get_recipient(request, rest[0])
        if head == "mailings" and len(rest) == 1 and method == "GET":
            return await self.get_mailing(request, rest[0])
        if head == "mailings" and len(rest) == 2 and rest[1] == "recipients" and method == "GET":
            return await self.mailing_recipients(request, rest[0])
        if head == "summary" and not rest and method == "GET":
            return await self.get_summary(request)
        if head == "suppressions":
            return await self.suppressions(request, method, rest)
        known = head in ("messages", "deliveries", "recipients", "mailings", "summary")
        raise HttpError(405 if known else 404,
                        f"{method} is not allowed here" if known else "no such endpoint")

    # -- injection -------------------------------------------------------------

    def _read_json(self, request: Request, limit: int) -> dict[str, Any]:
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

    def _build_message(self, data: Mapping[str, Any]) -> bytes:
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
                    raw = base64.b64decode(data["raw_base64"], validate=True)
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

    async def inject(self, request: Request) -> None:
        """POST /api/v1/messages: validate, enqueue, answer with the queue id after commit."""
        now = self.clock.seconds()
        data = self._read_json(request, self.inject_body_limit)
        unknown = sorted(set(data) - INJECT_FIELDS)
        if unknown:
            raise HttpError(400, f"{unknown[0]}: unknown field", unknown[0])
        recipients = data.get("recipients")
        if isinstance(recipients, str):
            recipients = [recipients]
        if not isinstance(recipients, list) or not recipients:
            raise HttpError(400, "recipients: expected a non-empty list of addresses",
                            "recipients")
        if len(recipients) > self.max_recipients:
            raise HttpError(400, f"recipients: at most {self.max_recipients} per message",
                            "recipients")
        seen: set[str] = set()
        rcpts = []
        for value in recipients:
            address = _address(value, "recipients")
            if address.lower() not in seen:  # the same address twice is one delivery
                seen.add(address.lower())
                rcpts.append(NewRecipient(address))
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
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise HttpError(400, "metadata: expected a JSON object", "metadata")
        if len(json.dumps(metadata)) > 64 * 1024:
            raise HttpError(400, "metadata: larger than 64 KiB", "metadata")
        raw = self._build_message(data)
        raw = self._add_identifiers(raw, ids["mailing_id"], ids["message_id"])
        if len(raw) > self.max_message_size:
            raise HttpError(413, f"message larger than {self.max_message_size} bytes")
        try:
            prepared = prepare_message(raw, hostname=self.hostname, now=now)
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
        client = f"api token={await self.access_name(request)}"
        message = NewMessage(
            sender=sender, recipients=tuple(rcpts), body=prepared.body,
            mailing_id=prepared.mailing_id, message_id=prepared.message_id,
            header_message_id=prepared.header_message_id, source="api", client=client,
            metadata=metadata)
        result = await self.store.enqueue(message, now)
        log.info("queued {queue_id} from {client} for {count} recipients",
                 queue_id=result.queue_id, client=client, count=len(rcpts))
        try:
            self.on_enqueued()
        except Exception:
            # Committed already: a failing hook must not turn that into an error.
            log.failure("on_enqueued hook failed")
        request.setHeader(b"location", f"/api/v1/messages/{result.queue_id}".encode("ascii"))
        write_json(request, 201, {
            "queue_id": result.queue_id,
            "mailing_id": prepared.mailing_id,
            "message_id": prepared.message_id,
            "header_message_id": prepared.header_message_id,
            "recipients": [
                {"address": r.address, "delivery_id": r.delivery_id,
                 "state": getattr(r.state, "value", r.state), "reason": r.reason}
                for r in result.recipients
            ],
        })

    async def access_name(self, request: Request) -> str:
        """The token name the request was authorised with (already checked: a cache hit)."""
        return await self.access.api_client(request, True)

    # -- reading ----------------------------------------------------------------

    async def get_message(self, request: Request, queue_id: str) -> None:
        """GET /api/v1/messages/<queue id>."""
        message = await self.store.get_message(queue_id)
        if message is None:
            raise HttpError(404, f"no message with queue id {queue_id}")
        deliveries = await self.store.search_deliveries(queue_id=message.queue_id, limit=1000)
        body = dataclasses.asdict(message)
        body.pop("message_pk", None)
        body["recipients"] = [delivery_json(d) for d in reversed(deliveries)]
        write_json(request, 200, body)

    async def get_delivery(self, request: Request, delivery_id: str) -> None:
        """GET /api/v1/deliveries/<id>: the delivery and its events."""
        if not delivery_id.isdigit():
            raise HttpError(400, "delivery_id: expected an integer", "delivery_id")
        delivery = await self.store.get_delivery(int(delivery_id))
        if delivery is None:
            raise HttpError(404, f"no delivery {delivery_id}")
        events = await self.store.events(delivery.delivery_id)
        body = delivery_json(delivery)
        body["events"] = [event_json(e) for e in events]
        write_json(request, 200, body)

    async def get_recipient(self, request: Request, address: str) -> None:
        """GET /api/v1/recipients/<address>: deliveries to it, newest first."""
        limit = int_arg(request, "limit", 100, 1, 1000)
        before = int_arg(request, "before", None, 1)
        found = await self.store.search_deliveries(recipient=address,
                                                   before_delivery_id=before, limit=limit)
        write_json(request, 200, {
            "recipient": address, "deliveries": [delivery_json(d) for d in found],
            "next_before": found[-1].delivery_id if len(found) == limit else None,
        })

    async def get_mailing(self, request: Request, mailing_id: str) -> None:
        """GET /api/v1/mailings/<id>: summary and rates."""
        summary = await self.store.mailing_summary(mailing_id)
        if summary.recipients == 0:
            raise HttpError(404, f"no mailing {mailing_id}")
        write_json(request, 200, {"mailing_id": mailing_id, **summary_json(summary)})

    async def mailing_recipients(self, request: Request, mailing_id: str) -> None:
        """GET /api/v1/mailings/<id>/recipients: one page, newest first."""
        limit = int_arg(request, "limit", 100, 1, 1000)
        before = int_arg(request, "before", None, 1)
        state = arg(request, "state") or None
        found = await self.store.search_deliveries(mailing_id=mailing_id, state=state,
                                                   before_delivery_id=before, limit=limit)
        write_json(request, 200, {
            "mailing_id": mailing_id, "deliveries": [delivery_json(d) for d in found],
            "next_before": found[-1].delivery_id if len(found) == limit else None,
        })

    async def get_summary(self, request: Request) -> None:
        """GET /api/v1/summary?since=&until=: window summary, rates and queue depth."""
        until = parse_time(arg(request, "until"), "until")
        since = parse_time(arg(request, "since"), "since")
        if since is None and until is None:
            until = self.clock.seconds()
            since = until - 86400
        summary = await self.store.summary(since, until)
        depth = await self.store.queue_depth()
        write_json(request, 200, {"since": since, "until": until, **summary_json(summary),
                                  "queue_depth": depth})

    # -- suppressions -------------------------------------------------------------

    async def suppressions(self, request: Request, method: str, rest: list[str]) -> None:
        """The suppression list: list, add, read one, remove one."""
        if not rest and method == "GET":
            limit = int_arg(request, "limit", 1000, 1, 10000)
            page = await self.store.suppressions(after=arg(request, "after") or None,
                                                 limit=limit)
            write_json(request, 200, {
                "suppressions": [dataclasses.asdict(s) for s in page],
                "next_after": page[-1].address if len(page) == limit else None,
            })
            return
        if not rest and method == "POST":
            data = self._read_json(request, SUPPRESSION_BODY_LIMIT)
            address = _address(data.get("address"), "address")
            reason = data.get("reason", "operator")
            note = data.get("note")
            if not isinstance(reason, str) or not reason or len(reason) > 64:
                raise HttpError(400, "reason: expected a short word", "reason")
            if note is not None and not isinstance(note, str):
                raise HttpError(400, "note: expected a string", "note")
            added = await self.store.suppress(address, reason, self.clock.seconds(),
                                              source="operator", note=note)
            entry = await self.store.get_suppression(address)
            write_json(request, 201 if added else 200,
                       {"added": added, "suppression": dataclasses.asdict(entry)
                        if entry else None})
            return
        if len(rest) == 1 and method == "GET":
            entry = await self.store.get_suppression(rest[0])
            if entry is None:
                raise HttpError(404, f"{rest[0]} is not suppressed")
            write_json(request, 200, dataclasses.asdict(entry))
            return
        if len(rest) == 1 and method == "DELETE":
            if not await self.store.unsuppress(rest[0]):
                raise HttpError(404, f"{rest[0]} is not suppressed")
            write_json(request, 200, {"removed": rest[0].strip().lower()})
            return
        raise HttpError(405, f"{method} is not allowed here")


