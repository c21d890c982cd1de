"""Provider callbacks: unknown channels and kinds without a parser are refused, never a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.channels import service as channel_store
from hongyan.runtime import Runtime


def test_unknown_channel_kind_and_smpp_channel(client: TestClient, runtime: Runtime) -> None:
    r = client.post("/api/v1/callbacks/nope/status", content=b"[]")
    assert r.status_code == 404 and r.json()["code"] == "unknown_channel"
    with runtime.engine.begin() as conn:
        channel_store.add_channel(
            conn,
            runtime.clock,
            runtime.keyring,
            name="cmcc",
            kind="smpp",
            config={"host": "127.0.0.1", "port": 2775, "system_id": "x"},
            secrets={"password": "y"},
        )
    # SMPP receipts come over the bind, not by HTTP.
    assert client.post("/api/v1/callbacks/cmcc/status", content=b"[]").status_code == 404
    assert client.post("/api/v1/callbacks/cmcc/tok/bogus", content=b"[]").status_code == 404


def test_a_nul_in_a_callback_is_refused_not_a_500(client: TestClient, runtime: Runtime) -> None:
    """U+0000 reaches no column: PostgreSQL refuses it (the app's DataError handler answers the
    typed 422), SQLite finds no such channel."""
    r = client.post("/api/v1/callbacks/no%00pe/status", content=b"[]")
    assert r.status_code in (404, 422) and r.json()["code"] in (
        "unknown_channel",
        "validation_failed",
    )
