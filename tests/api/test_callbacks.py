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
