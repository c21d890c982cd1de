"""A tenant's extension code (扩展码): digits only, unique, never a prefix of another's."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from hongyan.db.tables import tenants
from hongyan.errors import Conflict, HongyanError, NotFound, ValidationFailed
from hongyan.runtime import Runtime
from hongyan.tenants.service import create_tenant, set_sms_ext


def make(runtime: Runtime, *slugs: str) -> list[int]:
    with runtime.engine.begin() as conn:
        return [create_tenant(conn, runtime.clock, slug=s, name=s).id for s in slugs]


def ext_of(runtime: Runtime) -> dict[int, str | None]:
    with runtime.engine.connect() as conn:
        return {r.id: r.sms_ext for r in conn.execute(sa.select(tenants.c.id, tenants.c.sms_ext))}


def set_ext(runtime: Runtime, tenant_id: int, ext: str | None) -> None:
    with runtime.engine.begin() as conn:
        set_sms_ext(conn, tenant_id, ext)


BAD = ["", "123456789", "1a", "a1", "１２", " 12", "12 ", "12\n", "-1", "+1", "1.5", "١٢", "²"]


def test_digits_only_one_to_eight(runtime: Runtime) -> None:
    [a, b, c] = make(runtime, "tea", "noodle", "rice")
    set_ext(runtime, a, "0")
    set_ext(runtime, b, "12345678")
    set_ext(runtime, c, "99")
    assert ext_of(runtime) == {a: "0", b: "12345678", c: "99"}
    for bad in BAD:
        with pytest.raises(ValidationFailed) as info:
            set_ext(runtime, c, bad)
        assert "1 to 8 digits" in info.value.message_en and "1 到 8 位数字" in info.value.message_zh
    assert ext_of(runtime)[c] == "99"  # every refusal left the code as it was
    set_ext(runtime, c, None)
    assert ext_of(runtime)[c] is None
    set_ext(runtime, c, None)  # clearing twice is fine


def test_a_code_is_unique(runtime: Runtime) -> None:
    [a, b] = make(runtime, "tea", "noodle")
    set_ext(runtime, a, "12")
    set_ext(runtime, a, "12")  # the same code again on the same tenant: nothing to refuse
    with pytest.raises(Conflict) as info:
        set_ext(runtime, b, "12")
    assert "12" in info.value.message_en and info.value.status == 409
    assert ext_of(runtime) == {a: "12", b: None}
    set_ext(runtime, a, None)  # released …
    set_ext(runtime, b, "12")  # … and taken by another
    assert ext_of(runtime) == {a: None, b: "12"}


@pytest.mark.parametrize("clash", ["1", "123", "12345678"])
def test_a_prefix_of_another_code_is_refused(runtime: Runtime, clash: str) -> None:
    [a, b] = make(runtime, "tea", "noodle")
    set_ext(runtime, a, "12")
    with pytest.raises(Conflict) as info:
        set_ext(runtime, b, clash)
    assert "prefix" in info.value.message_en and "前缀" in info.value.message_zh
    assert ext_of(runtime) == {a: "12", b: None}
    # Codes that share only a leading digit are fine; a tenant may lengthen its own code.
    set_ext(runtime, b, "13")
    set_ext(runtime, a, "123")
    assert ext_of(runtime) == {a: "123", b: "13"}


def test_an_unknown_tenant_is_not_found(runtime: Runtime) -> None:
    [a] = make(runtime, "tea")
    with pytest.raises(NotFound):
        set_ext(runtime, a + 100, "77")
    assert ext_of(runtime) == {a: None}


def test_codes_stay_unique_and_prefix_free_under_any_sequence(runtime: Runtime) -> None:
    """A model of the rules against the database, over a random walk of 150 changes."""
    ids = make(runtime, *(f"tenant-{i}" for i in range(6)))
    model: dict[int, str | None] = dict.fromkeys(ids)
    rng = random.Random(20261111)
    accepted = refused = 0
    for _ in range(150):
        t = rng.choice(ids)
        code = "".join(rng.choices("012", k=rng.randint(1, 3)))
        ext = None if rng.random() < 0.15 else code
        others = [e for i, e in model.items() if i != t and e is not None]
        ok = ext is None or not any(o.startswith(ext) or ext.startswith(o) for o in others)
        try:
            set_ext(runtime, t, ext)
        except HongyanError as exc:
            assert not ok, (t, ext, model)
            assert isinstance(exc, Conflict)
            refused += 1
        else:
            assert ok, (t, ext, model)
            model[t] = ext
            accepted += 1
        assert ext_of(runtime) == model
    codes = [e for e in model.values() if e is not None]
    assert all(not x.startswith(y) for x in codes for y in codes if x is not y)
    assert accepted > 20 and refused > 20  # the walk exercised both sides
