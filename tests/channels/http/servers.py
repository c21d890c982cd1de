"""Local stand-ins for the providers: real HTTP servers on 127.0.0.1 that check what a provider
checks, signatures included, written from the providers' documentation independently of the
code under test (so a wrong signing algorithm fails here rather than agreeing with itself)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


class LocalServer:
    """An ASGI app served by uvicorn on a loopback port for the length of an ``async with``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Traffic:
    """What a fake provider saw: requests, the client connections they came on, concurrency."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    delay: float = 0.0

    async def enter(self, request: Request) -> None:
        if request.client is not None:
            self.peers.add((request.client.host, request.client.port))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.delay:
            await asyncio.sleep(self.delay)

    def leave(self) -> None:
        self.in_flight -= 1


# ---------------------------------------------------------------------------------------------
# Alibaba Cloud dysmsapi, RPC style, signature version 1.0


def aliyun_encode(text: str) -> str:
    """Percent-encoding as the signature document describes it, byte by byte."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch.isascii() and (ch.isalnum() or ch in "-_.~"):
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def aliyun_expected_signature(method: str, params: dict[str, str], secret: str) -> str:
    pairs = sorted((aliyun_encode(k), aliyun_encode(v)) for k, v in params.items())
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    to_sign = method + "&" + aliyun_encode("/") + "&" + aliyun_encode(canonical)
    digest = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class FakeAliyun:
    access_key_id: str
    secret: str
    #: PhoneNumbers → (HTTP status, body) to answer instead of success.
    outcomes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    nonces: set[str] = field(default_factory=set)
    now: Callable[[], float] = time.time
    biz_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900619746936))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        await self.traffic.enter(request)
        try:
            return await self._answer(request)
        finally:
            self.traffic.leave()

    async def _answer(self, request: Request) -> Response:
        body = (await request.body()).decode()
        pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=True)
        params = dict(pairs)
        assert len(params) == len(pairs), "a parameter was sent twice"
        self.traffic.requests.append(params)

        def error(status: int, code: str, message: str) -> Response:
            return JSONResponse({"RequestId": "R", "Code": code, "Message": message}, status)

        if params.get("AccessKeyId") != self.access_key_id:
            return error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        signature = params.pop("Signature", "")
        if not hmac.compare_digest(
            signature, aliyun_expected_signature("POST", params, self.secret)
        ):
            return error(400, "SignatureDoesNotMatch", "Specified signature is not matched.")
        for key, value in (
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Version", "2017-05-25"),
            ("Action", "SendSms"),
            ("Format", "JSON"),
        ):
            if params.get(key) != value:
                return error(400, "MissingParameter", f"{key} must be {value}")
        at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if abs(at.timestamp() - self.now()) > 900:
            return error(400, "InvalidTimeStamp.Expired", "timestamp out of range")
        nonce = params["SignatureNonce"]
        if nonce in self.nonces:
            return error(400, "SignatureNonceUsed", "nonce used")
        self.nonces.add(nonce)
        for key in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(key):
                return error(400, "isv.INVALID_PARAMETERS", f"{key} is required")
        json.loads(params.get("TemplateParam", "{}"))
        outcome = self.outcomes.get(params["PhoneNumbers"])
        if outcome is not None:
            status, answer = outcome
            if isinstance(answer, str):
                return Response(answer, status, media_type="text/html")
            return JSONResponse(answer, status)
        biz_id = f"{next(self.biz_ids)}^0"
        return JSONResponse({"RequestId": "R", "Code": "OK", "Message": "OK", "BizId": biz_id})


# ---------------------------------------------------------------------------------------------
# Tencent Cloud API 3.0, TC3-HMAC-SHA256


def tc3_expected_signature(
    secret_key: str, date: str, ts: str, service: str, canonical_request: str
) -> str:
    def hm(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()

    scope = f"{date}/{service}/tc3_request"
    to_sign = (
        "TC3-HMAC-SHA256\n"
        + ts
        + "\n"
        + scope
        + "\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    k_date = hm(("TC3" + secret_key).encode("utf-8"), date)
    k_service = hm(k_date, service)
    k_signing = hm(k_service, "tc3_request")
    return hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class FakeTencent:
    secret_id: str
    secret_key: str
    sdk_app_id: str
    region: str = "ap-guangzhou"
    #: phone number → per-number status Code (e.g. "LimitExceeded.PhoneNumberDailyLimit")
    number_codes: dict[str, str] = field(default_factory=dict)
    #: phone number → request-level Error.Code, or (HTTP status, raw body)
    request_errors: dict[str, Any] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    now: Callable[[], float] = time.time

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        await self.traffic.enter(request)
        try:
            return await self._answer(request)
        finally:
            self.traffic.leave()

    @staticmethod
    def _error(code: str, message: str) -> Response:
        return JSONResponse(
            {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "req-1"}}
        )

    def _check_signature(self, request: Request, payload: bytes) -> str | None:
        auth = request.headers.get("authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "TC3-HMAC-SHA256":
            return "AuthFailure.InvalidAuthorization"
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        secret_id, date, service, terminal = fields["Credential"].split("/")
        if secret_id != self.secret_id:
            return "AuthFailure.SecretIdNotFound"
        ts = request.headers.get("x-tc-timestamp", "")
        if abs(int(ts) - self.now()) > 300:
            return "AuthFailure.SignatureExpire"
        if date != datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d"):
            return "AuthFailure.SignatureFailure"
        if service != "sms" or terminal != "tc3_request":
            return "AuthFailure.SignatureFailure"
        names = fields["SignedHeaders"].split(";")
        if "host" not in names or "content-type" not in names or names != sorted(names):
            return "AuthFailure.SignatureFailure"
        canonical_headers = "".join(
            f"{n}:{request.headers.get(n, '').strip().lower()}\n" for n in names
        )
        canonical_request = "\n".join(
            [
                request.method,
                request.url.path,
                request.url.query,
                canonical_headers,
                fields["SignedHeaders"],
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        expected = tc3_expected_signature(self.secret_key, date, ts, service, canonical_request)
        if not hmac.compare_digest(expected, fields["Signature"]):
            return "AuthFailure.SignatureFailure"
        return None

    async def _answer(self, request: Request) -> Response:
        payload = await request.body()
        problem = self._check_signature(request, payload)
        if problem:
            return self._error(problem, "The provided credentials could not be validated.")
        headers = request.headers
        if headers.get("x-tc-action") != "SendSms" or headers.get("x-tc-version") != "2021-01-11":
            return self._error("InvalidAction", "action or version")
        if headers.get("x-tc-region") != self.region:
            return self._error("InvalidParameterValue", "region")
        body = json.loads(payload)
        self.traffic.requests.append(body)
        if body.get("SmsSdkAppId") != self.sdk_app_id:
            return self._error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "app id")
        if not isinstance(body.get("TemplateParamSet"), list):
            return self._error("InvalidParameterValue.TemplateParameterFormatError", "params")
        numbers = body["PhoneNumberSet"]
        for number in numbers:
            error = self.request_errors.get(number)
            if isinstance(error, tuple):
                return Response(error[1], error[0], media_type="text/html")
            if error:
                return self._error(error, "refused")
        statuses = []
        for number in numbers:
            code = self.number_codes.get(number, "Ok")
            statuses.append(
                {
                    "SerialNo": f"2028:{next(self.serials):020d}" if code == "Ok" else "",
                    "PhoneNumber": number,
                    "Fee": 1 if code == "Ok" else 0,
                    "SessionContext": body.get("SessionContext", ""),
                    "Code": code,
                    "Message": "send success" if code == "Ok" else "refused",
                    "IsoCode": "CN",
                }
            )
        return JSONResponse({"Response": {"SendStatusSet": statuses, "RequestId": "req-2"}})


# ---------------------------------------------------------------------------------------------
# Twilio Messaging


def twilio_expected_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """As Twilio's security page describes it: the URL, then each name+value sorted by name."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    return base64.b64encode(
        hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    ).decode()


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    #: To → (HTTP status, body)
    outcomes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Basic-auth pairs accepted besides (account SID, auth token): API keys.
    api_keys: set[tuple[str, str]] = field(default_factory=set)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{account}/Messages.json", self.handle, methods=["POST"])
            ]
        )

    async def handle(self, request: Request) -> Response:
        await self.traffic.enter(request)
        try:
            return await self._answer(request)
        finally:
            self.traffic.leave()

    async def _answer(self, request: Request) -> Response:
        def error(status: int, code: int, message: str) -> Response:
            return JSONResponse(
                {"code": code, "message": message, "more_info": "", "status": status}, status
            )

        auth = request.headers.get("authorization", "")
        scheme, _, encoded = auth.partition(" ")
        user, _, password = base64.b64decode(encoded or "").decode().partition(":")
        accepted = {(self.account_sid, self.auth_token), *self.api_keys}
        if scheme != "Basic" or (user, password) not in accepted:
            return error(401, 20003, "Authenticate")
        if request.path_params["account"] != self.account_sid:
            return error(404, 20404, "The requested resource was not found")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return error(400, 21000, "form expected")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.traffic.requests.append(form)
        if not form.get("To"):
            return error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return error(400, 21602, "Message body is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return error(400, 21603, "A 'From' phone number is required.")
        outcome = self.outcomes.get(form["To"])
        if outcome is not None:
            status, answer = outcome
            if isinstance(answer, str):
                return Response(answer, status, media_type="text/html")
            return JSONResponse(answer, status)
        sid = f"SM{next(self.sids):032x}"
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "accepted" if form.get("MessagingServiceSid") else "queued",
                "error_code": None,
                "error_message": None,
                "num_segments": "1",
            },
            201,
        )

    def status_callback(
        self, sent: dict[str, str], sid: str, status: str, error_code: str = ""
    ) -> tuple[str, dict[str, str], bytes]:
        """The (signature header, headers, body) Twilio would post to the StatusCallback."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": sent.get("From", "+15005550006"),
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": sent["To"],
        }
        if error_code:
            params["ErrorCode"] = error_code
        url = sent["StatusCallback"]
        signature = twilio_expected_signature(self.auth_token, url, params)
        return url, {"X-Twilio-Signature": signature}, urlencode(params).encode()
