"""A contact's own time zone: from an import column (checked with zoneinfo), from the API, or
derived from a foreign number that has exactly one zone; Chinese numbers keep the tenant's."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.contacts import events, importer, service
from hongyan.contacts.numbers import check_zone, zone_of
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import contacts
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants


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
            now=runtime.clock.now(),
        )  # fmt: skip
        events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, batch)
        made = conn.execute(
            TenantScope(tenant_id)
            .select(contacts, contacts.c.time_zone)
            .where(contacts.c.country == "US")
        ).scalar_one()
        assert made == "America/New_York"


def _forget_zones(runtime: Runtime) -> None:
    """As contacts stored before migration 0016 were: no zone at all."""
    with runtime.engine.begin() as conn:
        conn.execute(unscoped(sa.update(contacts).values(time_zone=None), "test: before 0016"))


def test_backfill_fills_only_the_gaps_a_number_decides(runtime: Runtime, tenant_id: int) -> None:
    from hongyan.contacts import time_zones

    _import(
        runtime,
        tenant_id,
        "phone,timezone\n"
        "+12125551234,\n"  # New York
        "+14155550123,\n"  # Los Angeles
        "+819012345678,\n"  # Tokyo
        "+819012345679,\n"  # Tokyo: the person clears it (below), which is kept
        "+79161234567,\n"  # Russia's mobiles span zones: left to the tenant's
        "13812345678,\n",  # Chinese: the tenant's
    )
    with runtime.engine.begin() as conn:
        other = tenants.create_tenant(conn, runtime.clock, slug="other", name="别家").id
    _import(runtime, other, "phone\n+12125551234\n")
    _forget_zones(runtime)
    # then a file gives one of them a zone, and a person clears another's (the tenant's zone)
    _import(runtime, tenant_id, "phone,timezone\n+14155550123,Asia/Shanghai\n")
    with runtime.engine.begin() as conn:
        cleared = service.find_id(conn, runtime.keyring, tenant_id, "+819012345679")
        assert cleared is not None
        service.set_time_zone(conn, runtime.clock, tenant_id, cleared, None, actor="user:1")

    def run(**kw: object) -> dict[str, object]:
        return time_zones.backfill(
            runtime.engine, runtime.clock, runtime.keyring, tenant_id, actor="t", batch=2, **kw
        ).as_json()  # type: ignore[arg-type]

    dry = run(dry_run=True)
    assert (dry["read"], dry["filled"], dry["kept"], dry["no_single_zone"]) == (4, 2, 1, 1)
    assert set(_zones(runtime, tenant_id).values()) == {None, "Asia/Shanghai"}  # nothing written
    done = run()
    assert (done["read"], done["filled"], done["kept"], done["batches"]) == (4, 2, 1, 2)
    assert done["by_zone"] == {"America/New_York": 1, "Asia/Tokyo": 1}
    with runtime.engine.connect() as conn:
        by_number = {
            n: service.get_contact(
                conn, tenant_id, service.find_id(conn, runtime.keyring, tenant_id, n) or 0
            )["time_zone"]
            for n in (
                "+12125551234", "+14155550123", "+819012345678", "+819012345679",
                "+79161234567", "+8613812345678",
            )
        }  # fmt: skip
    assert by_number == {
        "+12125551234": "America/New_York",
        "+14155550123": "Asia/Shanghai",  # the file's, not the number's
        "+819012345678": "Asia/Tokyo",
        "+819012345679": None,  # the person's choice
        "+79161234567": None,
        "+8613812345678": None,
    }
    assert set(_zones(runtime, other).values()) == {None}  # another tenant's: untouched
    again = run()
    assert (again["filled"], again["read"]) == (0, 2)  # the Russian and the cleared one


def test_a_zone_cleared_during_the_backfill_stays_cleared(runtime: Runtime, tenant_id: int) -> None:
    from hongyan.contacts import time_zones

    _import(runtime, tenant_id, "phone\n+12125551234\n+819012345678\n")
    _forget_zones(runtime)
    with runtime.engine.connect() as conn:
        ids = [
            service.find_id(conn, runtime.keyring, tenant_id, n)
            for n in ("+12125551234", "+819012345678")
        ]
    later = max(i for i in ids if i is not None)  # the backfill reads in id order
    cleared: list[int] = []

    def meanwhile(_: object) -> None:  # after the first batch, a person clears the other's
        if not cleared:
            with runtime.engine.begin() as conn:
                service.set_time_zone(conn, runtime.clock, tenant_id, later, None, actor="u:1")
            cleared.append(later)

    done = time_zones.backfill(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, actor="t", batch=1,
        progress=meanwhile,
    ).as_json()  # fmt: skip
    assert cleared and (done["filled"], done["kept"]) == (1, 1)
    zones = _zones(runtime, tenant_id)
    assert len(zones) == 2 and sorted(z or "" for z in zones.values())[0] == ""


def test_every_path_that_makes_a_contact_gives_it_its_zone(
    client: TestClient, runtime: Runtime, tenant_id: int
) -> None:
    """An import and an event through the API make foreign contacts with their zone, so a
    backfill after them finds nothing to do."""
    from hongyan.contacts import time_zones
    from hongyan.security import apikeys
    from hongyan.security.roles import Role
    from tests.api.test_api import auth

    _import(runtime, tenant_id, "phone\n+12125551234\n")
    with runtime.engine.begin() as conn:
        key = apikeys.create(conn, runtime.clock, tenant_id, "k", Role.OPERATOR).key
    posted = client.post(
        "/api/v1/events",
        headers=auth(key),
        json={"events": [{"event_id": "e1", "kind": "registration", "phone": "+4915112345678",
                          "occurred_at": runtime.clock.now().isoformat()}]},
    )  # fmt: skip
    assert posted.status_code == 200, posted.text
    assert posted.json()["contacts_created"] == 1
    assert sorted(z or "" for z in _zones(runtime, tenant_id).values()) == [
        "America/New_York",
        "Europe/Berlin",
    ]
    result = time_zones.backfill(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, actor="t"
    )
    assert (result.read, result.filled) == (0, 0)
