"""Secret material for the embedded default: generated once into ``var/secrets.env`` (0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hongyan.errors import ConfigurationError
from hongyan.security.keyring import KeyRing
from hongyan.settings import Settings

SECRET_FIELDS = ("data_keys", "active_key", "index_key", "session_secret")


def secrets_file(settings: Settings) -> Path:
    return settings.var_dir / "secrets.env"


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def missing(settings: Settings) -> list[str]:
    return [name for name in SECRET_FIELDS if not getattr(settings, name)]


def generate_file(path: Path) -> None:
    key_id = "k1"
    lines = [
        "# hongyan secrets for this installation. Keep this file private and backed up:",
        "# without HONGYAN_DATA_KEYS the stored phone numbers cannot be read.",
        f"HONGYAN_DATA_KEYS={key_id}:{KeyRing.generate_key()}",
        f"HONGYAN_ACTIVE_KEY={key_id}",
        f"HONGYAN_INDEX_KEY={KeyRing.generate_key()}",
        f"HONGYAN_SESSION_SECRET={secrets.token_urlsafe(32)}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def complete(settings: Settings, *, generate: bool = False) -> tuple[Settings, str | None]:
    """Fill missing secrets from ``var/secrets.env`` (creating it when ``generate``).

    Returns the completed settings and a note to show the user when a file was created.
    Production never reads or writes the file: its secrets come from the environment only.
    """
    if not missing(settings):
        return settings, None
    if settings.env == "production":
        raise ConfigurationError(
            "Production needs " + ", ".join(f"HONGYAN_{n.upper()}" for n in missing(settings)),
            "生产环境缺少密钥配置：" + ", ".join(f"HONGYAN_{n.upper()}" for n in missing(settings)),
        )
    path = secrets_file(settings)
    note = None
    if not path.exists():
        if not generate:
            raise ConfigurationError(
                f"No secrets configured; run `hongyan demo` or set them (see {path})",
                f"尚未配置密钥；请运行 hongyan demo 或设置环境变量（见 {path}）",
            )
        generate_file(path)
        note = f"Generated new secret keys into {path} (mode 0600). Back it up."
    values = _read_env_file(path)
    update = {}
    for name in SECRET_FIELDS:
        if not getattr(settings, name):
            update[name] = values.get(f"HONGYAN_{name.upper()}", "")
    completed = settings.model_copy(update=update)
    if missing(completed):
        raise ConfigurationError(f"{path} lacks " + ", ".join(missing(completed)))
    return completed, note
