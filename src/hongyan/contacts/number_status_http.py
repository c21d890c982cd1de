"""A paid 空号检测 (number-status) service over HTTP: the generic shape most vendors share.

Each request is ``POST <url>`` with the JSON body ``{"numbers": [...]}`` (the field is
``number_status_request_field``), at most ``number_status_batch`` numbers, written as E.164
(``+8613812345678``), digits (``8613812345678``) or national (``13812345678``), and the API key
in one header (``X-API-Key`` by default). The answer is JSON holding, at ``result_path``
(dotted; ``data`` by default, empty for the whole body), either a list of records
``{"number": …, "status": code}`` (field names configurable) or an object ``{number: code}``.
A number may come back in any of the three forms. The vendor's codes are read through a table
(``1=active,0=empty,2=unknown,…``); a code the table does not list is ``unknown``.

Failures never make a number ``empty`` (see :mod:`hongyan.contacts.number_status`): a timeout,
a refused connection, a non-2xx status, an answer that is not JSON or not of the expected shape,
numbers left out, contradicting answers and unlisted codes leave the numbers concerned
``unknown`` and are reported as :class:`~hongyan.contacts.number_status.Failure` and logged with
masked numbers. A failed request is not retried: the vendor may have done (and billed) the work
already, and the next run checks those numbers again. ``timeout`` bounds each read and the
whole answer's arrival; redirects are not followed, no proxy is taken from the environment, and
an answer larger than the batch can explain is refused. Neither the key nor a full number
appears in a log line, a failure's detail or an error.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from hongyan.channels.http.common import provider_number
from hongyan.contacts.number_status import STATUSES, Failure, Verdicts
from hongyan.errors import ConfigurationError
from hongyan.logs import redact
from hongyan.security.keyring import mask_phone

if TYPE_CHECKING:
    from hongyan.settings import Settings

log = logging.getLogger("hongyan.contacts.number_status")

FORMATS = ("e164", "digits", "national")
#: An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: Fields of a vendor's error answer worth showing (never the numbers: those are masked).
VENDOR_FIELDS = ("code", "msg", "message", "errmsg", "error", "desc", "description")


def _bad(setting: str, en: str, zh: str) -> ConfigurationError:
    name = f"HONGYAN_{setting.upper()}"
    return ConfigurationError(f"{name}: {en}", f"{name}：{zh}")


def parse_codes(text: str) -> dict[str, str]:
    """``"1=active,0=empty,2=unknown"`` → ``{"1": "active", "0": "empty", "2": "unknown"}``."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        code, sep, status = item.partition("=")
        code, status = code.strip(), status.strip().lower()
        if not sep or not code:
            raise _bad(
                "number_status_codes",
                f"each item is CODE=STATUS, not {item.strip()!r}",
                f"每一项的格式为 代码=状态，而不是 {item.strip()!r}",
            )
        if status not in STATUSES:
            raise _bad(
                "number_status_codes",
                f"status {status!r} of code {code!r} is not one of {', '.join(STATUSES)}",
                f"代码 {code!r} 的状态 {status!r} 不是 active、empty 或 unknown",
            )
        if out.get(code, status) != status:
            raise _bad(
                "number_status_codes",
                f"code {code!r} is given two statuses",
                f"代码 {code!r} 对应了两种状态",
            )
        out[code] = status
    if "empty" not in out.values() and "active" not in out.values():
        raise _bad(
            "number_status_codes",
            "no code means active or empty: every number would stay unknown",
            "没有任何代码对应 active 或 empty，所有号码都会是未知",
        )
    return out


@dataclass(frozen=True)
class HttpConfig:
    url: str
    key: str = field(repr=False)
    key_header: str
    number_format: str
    codes: Mapping[str, str]
    batch: int
    timeout: float
    request_field: str
    result_path: tuple[str, ...]
    number_field: str
    status_field: str

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpConfig:
        """The ``HONGYAN_NUMBER_STATUS_*`` settings, checked; a ConfigurationError says what is
        wrong (without the key)."""
        url = settings.number_status_url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _bad(
                "number_status_url",
                "the paid number-status service needs an http(s) URL",
                "付费空号检测服务需要一个 http(s) 地址",
            )
        if settings.env == "production" and parts.scheme != "https":
            raise _bad(
                "number_status_url",
                "production sends numbers over https:// only",
                "生产环境只通过 https:// 发送号码",
            )
        key = settings.number_status_key.get_secret_value()
        if any(ch in key for ch in "\r\n\0"):
            raise _bad("number_status_key", "the key holds a line break", "密钥中含有换行符")
        header = settings.number_status_key_header.strip()
        if key and not HEADER_NAME.match(header):
            raise _bad(
                "number_status_key_header",
                f"{header!r} is not an HTTP header name",
                f"{header!r} 不是合法的 HTTP 头名称",
            )
        if settings.number_status_number_format not in FORMATS:
            raise _bad(
                "number_status_number_format",
                f"one of {', '.join(FORMATS)}",
                f"只能是 {'、'.join(FORMATS)}",
            )
        if not 1 <= settings.number_status_batch <= 10_000:
            raise _bad("number_status_batch", "between 1 and 10000", "须在 1–10000 之间")
        if not 0 < settings.number_status_timeout <= 600:
            raise _bad("number_status_timeout", "between 0 and 600 seconds", "须在 0–600 秒之间")
        names = {
            "number_status_request_field": settings.number_status_request_field.strip(),
            "number_status_number_field": settings.number_status_number_field.strip(),
            "number_status_status_field": settings.number_status_status_field.strip(),
        }
        for setting, value in names.items():
            if not value:
                raise _bad(setting, "must name a JSON field", "须为 JSON 字段名")
        path = settings.number_status_result_path.strip()
        return cls(
            url=url,
            key=key,
            key_header=header,
            number_format=settings.number_status_number_format,
            codes=parse_codes(settings.number_status_codes),
            batch=settings.number_status_batch,
            timeout=float(settings.number_status_timeout),
            request_field=names["number_status_request_field"],
            result_path=tuple(p.strip() for p in path.split(".")) if path else (),
            number_field=names["number_status_number_field"],
            status_field=names["number_status_status_field"],
        )


# ---------------------------------------------------------------------------------------------
# Numbers


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and ch.isdigit())


def _international(number: str) -> str:
    """Country code and number as digits; an 11-digit mainland mobile without ``+`` gets 86."""
    digits = _digits(number)
    if number.strip().startswith("+"):
        return digits
    if digits.startswith("00"):
        return digits[2:]
    if len(digits) == 11 and digits.startswith("1"):
        return "86" + digits
    return digits


def wire_form(number: str, number_format: str) -> str | None:
    """The number as the service is sent it; None when the format cannot carry it."""
    digits = _international(number)
    if number_format == "e164":
        return "+" + digits
    if number_format == "digits":
        return digits
    return digits[2:] if digits.startswith("86") else None


def _canonical(text: str) -> str:
    """One key for the three forms of a mainland number (11 digits); others: their digits."""
    return provider_number(text)


def _matcher(wire: Mapping[str, str]) -> Callable[[Any], str | None]:
    """Finds which number sent an answered number stands for: the exact form sent, else the
    same number in another form (when no two numbers of the batch share that key)."""
    exact = {w: n for n, w in wire.items()}
    loose: dict[str, str | None] = {}
    for n in wire:
        k = _canonical(n)
        loose[k] = None if loose.get(k, n) != n else n

    def match(raw: Any) -> str | None:
        if raw is None or isinstance(raw, (dict, list, bool)):
            return None
        text = str(raw).strip()
        return exact.get(text) or loose.get(_canonical(text))

    return match


def code_text(raw: Any) -> str:
    """A vendor's status code as the table names it: ``1``, ``"1"`` and ``1.0`` are ``"1"``."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, (int, float, str)):
        return str(raw).strip()
    return json.dumps(raw, ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# The provider


class _TooSlow(Exception):
    pass


class _TooLarge(Exception):
    pass


class _NoNode:
    pass


class HttpNumberStatus:
    """The generic paid 空号检测 service (see the module's docstring)."""

    name = "http"

    def __init__(self, config: HttpConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport

    def check(self, numbers: Sequence[str]) -> Verdicts:
        numbers = list(dict.fromkeys(numbers))
        out = Verdicts(dict.fromkeys(numbers, "unknown"))
        wire: dict[str, str] = {}
        unsent = []
        for n in numbers:
            form = wire_form(n, self.config.number_format)
            if form is None:
                unsent.append(n)
            else:
                wire[n] = form
        if unsent:
            self._fail(
                out,
                "not_sent",
                unsent,
                "the national format carries mainland China (+86) numbers only",
            )
        if not wire:
            return out
        sendable = list(wire)
        with httpx.Client(
            timeout=httpx.Timeout(self.config.timeout),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the URL is what we reach
            transport=self.transport,
        ) as client:
            for start in range(0, len(sendable), self.config.batch):
                chunk = sendable[start : start + self.config.batch]
                self._ask(client, {n: wire[n] for n in chunk}, out)
        return out

    # -- one request ---------------------------------------------------------------------------

    def _post(self, client: httpx.Client, numbers: list[str]) -> tuple[int, bytes]:
        config = self.config
        deadline = time.monotonic() + config.timeout
        limit = 65_536 + 512 * len(numbers)
        headers = {"Accept": "application/json"}
        if config.key:
            headers[config.key_header] = config.key
        with client.stream(
            "POST", config.url, json={config.request_field: numbers}, headers=headers
        ) as response:
            body = bytearray()
            for part in response.iter_bytes():
                body += part
                if len(body) > limit:
                    raise _TooLarge(limit)
                if time.monotonic() > deadline:
                    raise _TooSlow()
            if time.monotonic() > deadline:
                raise _TooSlow()
            return response.status_code, bytes(body)

    def _ask(self, client: httpx.Client, wire: dict[str, str], out: Verdicts) -> None:
        config, chunk = self.config, list(wire)
        try:
            status, body = self._post(client, list(wire.values()))
        except (_TooSlow, httpx.TimeoutException):
            self._fail(out, "timeout", chunk, f"no complete answer within {config.timeout:g} s")
            return
        except _TooLarge as exc:
            self._fail(out, "malformed", chunk, f"the answer is larger than {exc.args[0]} bytes")
            return
        except httpx.HTTPError as exc:  # its message may name the URL: the class says enough
            self._fail(out, "connection", chunk, f"no answer ({type(exc).__name__})")
            return
        try:
            data: Any = json.loads(body)
        except ValueError:
            data = _NoNode()
        if not 200 <= status < 300:
            self._fail(out, "http_status", chunk, self._vendor(f"HTTP {status}", data))
            return
        if isinstance(data, _NoNode):
            self._fail(out, "malformed", chunk, "the answer is not JSON")
            return
        node: Any = data
        for part in config.result_path:
            node = node.get(part, _NoNode()) if isinstance(node, dict) else _NoNode()
        if not isinstance(node, (list, dict)):
            where = ".".join(config.result_path) or "the top"
            self._fail(
                out, "malformed", chunk, self._vendor(f"no list or object at {where!r}", data)
            )
            return
        if isinstance(node, dict):
            entries = list(node.items())
        else:
            entries = [
                (item.get(config.number_field), item.get(config.status_field))
                for item in node
                if isinstance(item, dict)
            ]
        match = _matcher(wire)
        got: dict[str, str] = {}
        contradicted: set[str] = set()
        unlisted: dict[str, list[str]] = {}
        for raw_number, raw_code in entries:
            number = match(raw_number)
            if number is None:  # not one we asked about (or unreadable): nothing to learn
                continue
            code = code_text(raw_code)
            answer = config.codes.get(code)
            if answer is None:
                unlisted.setdefault(code, []).append(number)
                answer = "unknown"
            if got.get(number, answer) != answer:
                contradicted.add(number)
            got[number] = answer
        for number, answer in got.items():
            out[number] = "unknown" if number in contradicted else answer
        if contradicted:
            self._fail(
                out, "malformed", sorted(contradicted), "two different answers for one number"
            )
        if unlisted:
            codes = ", ".join(self._clean(c or "(none)", 24) for c in sorted(unlisted)[:5])
            self._fail(
                out,
                "unmapped_code",
                [n for ns in unlisted.values() for n in ns],
                f"codes not in HONGYAN_NUMBER_STATUS_CODES: {codes}",
            )
        missing = [n for n in chunk if n not in got]
        if missing:
            self._fail(out, "missing", missing, "numbers left out of the answer")

    # -- what is reported ------------------------------------------------------------------------

    def _fail(self, out: Verdicts, reason: str, numbers: Sequence[str], detail: str) -> None:
        numbers = list(dict.fromkeys(numbers))
        out.failures.append(Failure(self.name, reason, len(numbers), detail))
        sample = ", ".join(mask_phone(n) for n in numbers[:3])
        log.warning(
            "number status %s: %d number(s) left unknown, %s: %s (e.g. %s)",
            self.name,
            len(numbers),
            reason,
            detail,
            sample + (" …" if len(numbers) > 3 else ""),
        )

    def _clean(self, text: str, limit: int = 120) -> str:
        """Vendor text fit to show: no key, numbers masked, one line, bounded."""
        if self.config.key:
            text = text.replace(self.config.key, "***")
        text = " ".join(redact(text).split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def _vendor(self, head: str, data: Any) -> str:
        """``head`` and what the vendor's error answer says, if it says it in known fields."""
        if not isinstance(data, dict):
            return head
        said = [
            f"{k}={data[k]}"
            for k in VENDOR_FIELDS
            if isinstance(data.get(k), (str, int, float)) and not isinstance(data.get(k), bool)
        ]
        return f"{head} ({self._clean(' '.join(said))})" if said else head
