"""Secrets: generated once outside production, required from the environment in production."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hongyan.errors import ConfigurationError
from hongyan.runtime import Runtime
from hongyan.security import secrets
from hongyan.security.keyring import KeyRing
from hongyan.settings import Settings


def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    settings = Settings(env="production", var_dir=tmp_path, database_url="sqlite://")
    with pytest.raises(ConfigurationError) as err:
        Runtime.create(settings, generate_secrets=True)
    assert "HONGYAN_DATA_KEYS" in err.value.message_en
    assert not (tmp_path / "secrets.env").exists()


def test_development_generates_once(tmp_path: Path) -> None:
    settings = Settings(env="development", var_dir=tmp_path, database_url="sqlite://")
    with pytest.raises(ConfigurationError):
        secrets.complete(settings, generate=False)
    first, note = secrets.complete(settings, generate=True)
    assert note and "secrets.env" in note
    path = tmp_path / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, note2 = secrets.complete(settings, generate=True)
    assert note2 is None
    assert again.data_keys == first.data_keys and again.index_key == first.index_key
    assert not secrets.missing(again)


def test_environment_wins_over_file(tmp_path: Path) -> None:
    secrets.generate_file(tmp_path / "secrets.env")
    own = f"k9:{KeyRing.generate_key()}"
    settings = Settings(
        env="development",
        var_dir=tmp_path,
        database_url="sqlite://",
        data_keys=own,
        active_key="k9",
    )
    done, _ = secrets.complete(settings)
    assert done.data_keys == own and done.active_key == "k9" and done.index_key


def test_bad_key_material_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(
        env="test",
        var_dir=tmp_path,
        database_url="sqlite://",
        data_keys="k1:short",
        active_key="k1",
        index_key="x" * 44,
        session_secret="s",
    )
    with pytest.raises(ConfigurationError) as err:
        Runtime.create(settings)
    assert "Key ring" in err.value.message_en
