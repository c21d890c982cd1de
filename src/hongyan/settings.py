"""Configuration: one Settings object read from ``HONGYAN_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the platform reads from its environment.

    Secrets have no default: ``hongyan demo`` writes them once into ``./var/`` for the embedded
    default; a production process (``HONGYAN_ENV=production``) refuses to start without them.
    """

    model_config = SettingsConfigDict(env_prefix="HONGYAN_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("var")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Key ring: "id:base64key,id2:base64key"; the active key encrypts, all keys decrypt.
    data_keys: str = ""
    active_key: str = ""
    index_key: str = ""
    # Signs session cookies and CSRF tokens.
    session_secret: str = ""
    session_max_age: int = Field(default=8 * 3600, ge=60)
    default_timezone: str = "Asia/Shanghai"
    run_dispatcher: bool = True
    # The SMPP channel the dispatcher binds to: smpp://system_id:password@host:port
    smpp_url: str = ""
    sandbox_port: int = 2775
    # The platform's public address (behind a proxy), for provider callbacks' signatures.
    public_url: str = ""
    # The dispatcher: messages claimed per pass, and how long a claim is held before another
    # dispatcher may take the message over (a crashed dispatcher's messages wait this long).
    dispatch_batch: int = Field(default=200, ge=1, le=10000)
    dispatch_lease_seconds: float = Field(default=60.0, gt=0)
    # How long after a message's validity a missing receipt makes it expired.
    receipt_grace_seconds: float = Field(default=3600.0, ge=0)
    # Webhook URLs may point at loopback, private or link-local addresses (tests, a trusted LAN).
    webhook_allow_private: bool = False
    # A newer phone.dat (number prefix → province, city, card type) than the `phone` package's.
    phone_data: str = ""
    # The memory, in MB, one large contact import may take in all, its reader processes
    # included: it caps how many readers run beside the writer (hongyan.contacts.importer,
    # reader_count). At the default, one reader.
    import_memory_mb: int = Field(default=500, ge=200)
    # 空号检测 (number-status checks, `hongyan contacts check-numbers`), for every tenant:
    # `receipts` reads the tenant's own delivery receipts (free); `http` asks a paid service;
    # `receipts+http` asks the receipts first and the paid service only for the numbers they
    # leave unknown. The rest configures the paid service (hongyan.contacts.number_status_http).
    number_status_provider: Literal["receipts", "http", "receipts+http"] = "receipts"
    # Where the batches are POSTed (https:// in production).
    number_status_url: str = ""
    # The service's API key, sent in the header below; never logged or shown.
    number_status_key: SecretStr = SecretStr("")
    number_status_key_header: str = "X-API-Key"
    # How numbers are sent: `e164` (+8613812345678), `digits` (8613812345678) or `national`
    # (13812345678; numbers outside mainland China are then not sent and stay unknown).
    number_status_number_format: Literal["e164", "digits", "national"] = "e164"
    # The service's codes → active / empty / unknown; a code not listed counts as unknown.
    number_status_codes: str = "1=active,0=empty,2=unknown,3=unknown,4=unknown"
    # Numbers in one request, and seconds one request may take.
    number_status_batch: int = Field(default=100, ge=1, le=10_000)
    number_status_timeout: float = Field(default=10.0, gt=0, le=600)
    # The request is {<request_field>: [numbers]}; the answer holds, at <result_path> (dotted),
    # a list of {<number_field>: …, <status_field>: code} or an object {number: code}.
    number_status_request_field: str = "numbers"
    number_status_result_path: str = "data"
    number_status_number_field: str = "number"
    number_status_status_field: str = "status"

    @model_validator(mode="after")
    def _paid_number_status(self) -> Settings:
        """A paid number-status service configured wrongly stops the process at start-up, with a
        ConfigurationError that says what to fix, rather than at the first check."""
        if self.number_status_provider != "receipts":
            from hongyan.contacts.number_status_http import HttpConfig

            HttpConfig.from_settings(self)
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'hongyan.db').as_posix()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
