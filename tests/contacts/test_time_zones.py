"""A contact's own time zone: from an import column (checked with zoneinfo), from the API, or
derived from a foreign number that has exactly one zone; Chinese numbers keep the tenant's."""

from __future__ import annotations

import io

import pytest

from hongyan.contacts import events, importer, service
from hongyan.contacts.numbers import check_zone, zone_of
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts
from hongyan.runtime import Runtime


def _import(runtime: Runtime, tenant_id: int, text: str) -> importer.ImportResult:
    return service.import_stream(
        runtime, tenant_id, io.BytesIO(text.encode()), "f.csv", importer.ImportOptions()
    )


def _zones(runtime: Runtime, tenant_id: int) -> dict[str, str | None]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            TenantScope(tenant_id).select(contacts, contacts.c.phone_masked, contacts.c.time_zone)
        ).all()
    return {m: z for m, z in rows}


def test_zone_of_a_number() -> None:
    assert zone_of("+12125551234") == "America/New_York"
    assert zone_of("+14155550123") == "America/Los_Angeles"
    assert zone_of("+819012345678") == "Asia/Tokyo"
    assert zone_of("+8613912345678") is None  # the tenant's zone applies
    assert zone_of("+79161234567") is None  # Russia's mobiles span zones: not guessed
    assert check_zone(" Europe/Berlin ") == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "../etc/passwd", "x" * 65):
        with pytest.raises(ValueError):
            check_zone(bad)


def test_import_column_derivation_and_updates(runtime: Runtime, tenant_id: int) -> None:
    result = _import(
        runtime,
        tenant_id,
        "手机号,姓名,时区\n"
        "13812345678,李,America/New_York\n"  # a Chinese number living in New York
        "13812345679,王,Mars/Olympus\n"  # not a zone: a row error, nothing stored
        "13812345670,张,\n"  # no zone: the tenant's
        "+12125551234,Ann,\n"  # derived from the number
        "+819012345678,Ken,Asia/Shanghai\n",  # given wins over derived
    )
    assert (result.imported, result.invalid) == (4, 1)
    assert result.errors[0]["reason"] == "bad_time_zone" and result.errors[0]["line"] == 3
    zones = _zones(runtime, tenant_id)
    assert sorted(z or "" for z in zones.values()) == sorted(
        ["America/New_York", "", "America/New_York", "Asia/Shanghai"]
    )
    # Imported again: an empty cell keeps the stored zone, a given one replaces it, and a
    # number's derived zone never overwrites one that was given.
    result = _import(
        runtime,
        tenant_id,
        "phone,timezone\n13812345678,\n13812345670,Europe/London\n+819012345678,\n",
    )
    assert result.updated == 3 and result.invalid == 0
    with runtime.engine.connect() as conn:
        by_number = {
            n: service.get_contact(
                conn, tenant_id, service.find_id(conn, runtime.keyring, tenant_id, n) or 0
            )["time_zone"]
            for n in ("+8613812345678", "+8613812345670", "+819012345678", "+12125551234")
        }
    assert by_number == {
        "+8613812345678": "America/New_York",
        "+8613812345670": "Europe/London",
        "+819012345678": "Asia/Shanghai",
        "+12125551234": "America/New_York",
    }


def test_set_through_the_service_and_events(runtime: Runtime, tenant_id: int) -> None:
    _import(runtime, tenant_id, "手机号\n13812345678\n")
    with runtime.engine.begin() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
        assert cid is not None
        got = service.set_time_zone(
            conn, runtime.clock, tenant_id, cid, "America/Chicago", actor="t"
        )
        assert got["time_zone"] == "America/Chicago"
        with pytest.raises(service.BadTimeZone):
            service.set_time_zone(conn, runtime.clock, tenant_id, cid, "Chicago", actor="t")
        assert (
            service.set_time_zone(conn, runtime.clock, tenant_id, cid, None, actor="t")["time_zone"]
            is None
        )
        # an event from a new foreign number makes its contact with the number's zone
        tz = runtime.clock.now().tzinfo
        assert tz is not None
        batch = events.parse_batch(
            [{"event_id": "e1", "kind": "registration", "phone": "+12125551234",
              "occurred_at": runtime.clock.now().isoformat()}],
            tz,
        )  # fmt: skip
        events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, batch)
        made = conn.execute(
            TenantScope(tenant_id)
            .select(contacts, contacts.c.time_zone)
            .where(contacts.c.country == "US")
        ).scalar_one()
        assert made == "America/New_York"
