"""Errors a person can cause: typed, with a stable code and a message in Chinese and English."""

from __future__ import annotations

from typing import Any


class HongyanError(Exception):
    """Base of every error that is reported to a user rather than crashing."""

    code = "error"
    status = 400
    message_zh = "请求无法完成"
    message_en = "The request could not be completed"

    def __init__(
        self,
        message_en: str | None = None,
        message_zh: str | None = None,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message_en = message_en or type(self).message_en
        self.message_zh = message_zh or type(self).message_zh
        self.details = details or {}
        super().__init__(self.message_en)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": {"zh": self.message_zh, "en": self.message_en},
        }
        if self.details:
            out["details"] = self.details
        return out


class ValidationFailed(HongyanError):
    code = "validation_failed"
    status = 422
    message_zh = "输入不符合要求"
    message_en = "The input is not valid"


class NotFound(HongyanError):
    code = "not_found"
    status = 404
    message_zh = "找不到该资源"
    message_en = "Not found"


class Conflict(HongyanError):
    code = "conflict"
    status = 409
    message_zh = "与现有数据冲突"
    message_en = "Conflicts with existing data"


class AuthenticationFailed(HongyanError):
    code = "authentication_failed"
    status = 401
    message_zh = "身份验证失败"
    message_en = "Authentication failed"


class PermissionDenied(HongyanError):
    code = "permission_denied"
    status = 403
    message_zh = "没有执行此操作的权限"
    message_en = "You are not allowed to do this"


class DatabaseNotReady(HongyanError):
    code = "database_not_migrated"
    status = 503
    message_zh = "数据库尚未初始化，请先运行 hongyan db upgrade"
    message_en = "The database is not migrated; run `hongyan db upgrade` first"


class ConfigurationError(HongyanError):
    code = "configuration_error"
    status = 500
    message_zh = "配置错误"
    message_en = "Configuration error"
