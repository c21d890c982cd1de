"""Importing contact files into SQLite and PostgreSQL: formats, encodings, merges, suppression,
failures half-way, and what ends up stored."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from hongyan.contacts import fields, importer, service, suppression
from hongyan.contacts.sources import ImportFileError
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import consent_records, contact_imports, contact_tags, contacts
from hongyan.errors import ValidationFailed
from hongyan.runtime import Runtime

HEADER = "手机号,姓名,性别,生日,城市,标签,会员等级\n"


def _import(runtime: Runtime, tenant_id: int, data: bytes, **options: object):  # type: ignore[no-untyped-def]
    opts = importer.ImportOptions(**options)  # type: ignore[arg-type]
    return service.import_stream(runtime, tenant_id, io.BytesIO(data), "f.csv", opts)


def _contacts(runtime: Runtime, tenant_id: int) -> list[dict[str, object]]:
    with runtime.engine.connect() as conn:
        return service.list_contacts(conn, runtime.keyring, tenant_id, limit=1000).items


def test_formats_merge_and_counters(runtime: Runtime, tenant_id: int) -> None:
    rows = [
        "13812345678,李小龙,男,1990-05-06,上海,VIP,金卡",
        "138 1234 5678,,,,,新客,",  # same number: tags united, empty cells keep values
        "+86 139-0000-1111,王芳,女,1985/1/2,北京,,银卡",
        "'0086 13900001111,王芳芳,,,,,",  # same again: the later name wins
        "１３７００００２２２２,,,,,,",
        "abc,x,,,,,",
        "1381234567,短,,,,,",
        "13712345678,张三,未知,,,,",
    ]
    result = _import(
        runtime,
        tenant_id,
        (HEADER + "\n".join(rows) + "\n").encode(),
        consent_source="门店扫码",
        consent_proof="会员注册页勾选“接收优惠短信”",
        tags=("2026双11",),
    )
    assert (result.rows, result.imported, result.updated, result.duplicates, result.invalid) == (
        8,
        3,
        0,
        2,
        3,
    )
    assert result.rows == result.imported + result.updated + result.duplicates + result.invalid
    assert [(e["line"], e["reason"]) for e in result.errors] == [
        (7, "bad_characters"),
        (8, "wrong_length"),
        (9, "bad_gender"),
    ]
    assert result.columns["会员等级"] == "attr:会员等级:text"
    listed = {c["phone_masked"]: c for c in _contacts(runtime, tenant_id)}
    assert set(listed) == {"138****5678", "139****1111", "137****2222"}
    li = listed["138****5678"]
    assert li["name_masked"] == "李**" and li["gender"] == "m" and li["city"] == "上海"
    assert li["tags"] == ["2026双11", "VIP", "新客"]
    assert li["attrs"] == {"会员等级": "金卡"} and li["carrier"] == "cmcc"
    assert li["number_province"] == "江苏" and (li["birth_month"], li["birth_decade"]) == (5, 1990)
    wang = listed["139****1111"]
    with runtime.engine.begin() as conn:
        exported = service.export(
            conn, runtime.clock, runtime.keyring, tenant_id, "+8613900001111", "test"
        )
        defs = fields.attribute_definitions(conn, tenant_id)
    assert (
        exported["contact"]["name"] == "王芳芳" and exported["contact"]["birthday"] == "1985-01-02"
    )
    assert wang["attrs"] == {"会员等级": "银卡"}
    assert [(d.name, d.type) for d in defs] == [("会员等级", "text")]
    assert exported["consent_records"][0]["proof"].startswith("会员注册页")

    # Again with one change: existing contacts are updated, nothing duplicated.
    again = _import(runtime, tenant_id, (HEADER + "13812345678,李龙,,,,,钻石\n").encode())
    assert (again.imported, again.updated, again.duplicates) == (0, 1, 0)
    li = {c["phone_masked"]: c for c in _contacts(runtime, tenant_id)}["138****5678"]
    assert (
        li["name_masked"] == "李*" and li["gender"] == "m" and li["attrs"] == {"会员等级": "钻石"}
    )
    assert li["tags"] == ["2026双11", "VIP", "新客"]


def test_gbk_utf8_bom_utf16_and_tabs(runtime: Runtime, tenant_id: int) -> None:
    text = HEADER + "13812345678,张伟,男,,杭州,,\n"
    for data in (
        text.encode("gbk"),
        text.encode("gb18030"),
        b"\xef\xbb\xbf" + text.encode(),
        text.replace(",", "\t").encode("utf-16"),
    ):
        result = _import(runtime, tenant_id, data)
        assert result.invalid == 0 and result.imported + result.updated == 1
    [c] = _contacts(runtime, tenant_id)
    assert c["city"] == "杭州" and c["name_masked"] == "张*"


def test_xlsx(runtime: Runtime, tenant_id: int, tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["手机", "客户姓名", "积分", "生日"])
    sheet.append([13812345678, "赵六", 1200, None])  # a number Excel stored as a number
    sheet.append(["+86 139 0000 1111", "钱七", "abc", None])
    sheet.append(['=HYPERLINK("http://x")', "孙八", 1, None])
    path = tmp_path / "c.xlsx"
    book.save(path)
    result = service.import_path(
        runtime, tenant_id, path, importer.ImportOptions(mapping={"积分": "attr:积分:number"})
    )
    assert (result.imported, result.invalid) == (1, 2)
    assert [e["reason"] for e in result.errors] == ["bad_attribute", "formula"]
    [c] = _contacts(runtime, tenant_id)
    assert c["attrs"] == {"积分": 1200}
    with runtime.engine.connect() as conn:
        csv = importer.error_rows_csv(conn, runtime.keyring, tenant_id, result.import_id).decode()
    assert csv.startswith("\ufeff手机,客户姓名,积分,生日,line,reason,message")
    assert "'=HYPERLINK" in csv  # the formula is escaped in the error file
    assert "139****1111" in csv  # the number masked, as everywhere but a data export
    assert "1111" in csv and "13900001111" not in csv and "139 0000" not in csv


def test_xlsx_as_excel_writes_it(runtime: Runtime, tenant_id: int, tmp_path: Path) -> None:
    """Shared strings, a number typed as a number, and a birthday in Chinese Excel's date format
    (yyyy"年"m"月"d"日"), which is stored as a date, not as its serial number."""
    from datetime import date

    import xlsxwriter

    path = tmp_path / "会员.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("会员")
    born = book.add_format({"num_format": 'yyyy"年"m"月"d"日"'})
    sheet.write_row(0, 0, ["手机号", "姓名", "生日", "城市"])
    sheet.write_number(1, 0, 13812345678)
    sheet.write_rich_string(1, 1, "李", book.add_format({"bold": True}), "小龙")
    sheet.write_datetime(1, 2, date(1990, 5, 6), born)
    sheet.write_string(1, 3, "上海")
    sheet.write_string(2, 0, "139 0000 1111")
    sheet.write_string(2, 2, "不详")
    book.close()
    result = service.import_path(runtime, tenant_id, path, importer.ImportOptions())
    assert (result.imported, result.invalid) == (1, 1)
    assert [(e["line"], e["reason"]) for e in result.errors] == [(3, "bad_birthday")]
    [c] = _contacts(runtime, tenant_id)
    assert (c["name_masked"], c["city"], c["birth_month"], c["birth_day"]) == ("李**", "上海", 5, 6)


def test_suppressed_numbers_stay_suppressed(runtime: Runtime, tenant_id: int) -> None:
    with runtime.engine.begin() as conn:
        suppression.add(
            conn,
            runtime.clock,
            runtime.keyring,
            [suppression.NewSuppression(tenant_id, "+8613812345678", "opt_out", "reply")],
        )
    result = _import(
        runtime,
        tenant_id,
        (HEADER + "13812345678,李,,,,,\n13900001111,王,,,,,\n").encode(),
        consent_source="import",
        consent_proof="老客户名单",
    )
    assert (result.imported, result.suppressed) == (2, 1)
    from hongyan.dispatch.states import Lane

    with runtime.engine.connect() as conn:
        assert suppression.is_suppressed(
            conn, runtime.keyring, tenant_id, "+8613812345678", Lane.MARKETING, runtime.clock.now()
        )
        granted = conn.execute(
            TenantScope(tenant_id).select(consent_records, sa.func.count())
        ).scalar_one()
    assert granted == 1  # only the number that is not suppressed


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "import_empty"),
        (b"\x00\x01\x02binary\x00" * 100, "import_file_type"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "import_file_type"),
        ("姓名,城市\n张三,上海\n".encode(), "import_no_phone_column"),
        (b"abc,\x80\xff\n" * 20, "import_encoding"),
        (b"PK\x03\x04not really a zip", "import_file_type"),
        (HEADER.encode(), "import_empty"),
    ],
)
def test_bad_files_store_nothing(runtime: Runtime, tenant_id: int, data: bytes, code: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _import(runtime, tenant_id, data)
    assert caught.value.code == code
    assert caught.value.message_zh and caught.value.message_en
    assert _contacts(runtime, tenant_id) == []
    with runtime.engine.connect() as conn:
        job = conn.execute(TenantScope(tenant_id).select(contact_imports)).mappings().one()
    assert job["state"] == "failed" and job["error"]["code"] == code


def test_failure_half_way_leaves_nothing(runtime: Runtime, tenant_id: int) -> None:
    good = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(120))
    for tail, code in (
        ("13900001111," + "x" * (70 * 1024) + ",,,,,\n", "import_line_too_long"),
        ('13900001111,"unterminated\n', None),
    ):
        data = (HEADER + good + tail).encode()
        try:
            result = _import(runtime, tenant_id, data, batch_size=50)
        except ImportFileError as exc:
            assert exc.code == code
        else:  # an unterminated quote at the end is read as one last (odd) row
            assert code is None and result.rows == 121
            continue
        assert _contacts(runtime, tenant_id) == []
    gbk_then_broken = (HEADER + good).encode("gbk") + b"\x81\x20broken\n"
    with pytest.raises(ImportFileError) as caught:
        _import(runtime, tenant_id, gbk_then_broken, batch_size=50)
    assert caught.value.code in ("import_encoding", "import_csv_invalid")


@pytest.mark.parametrize("readers", [None, 2])
def test_a_file_whose_csv_breaks_half_way_stores_nothing(
    runtime: Runtime, tenant_id: int, tmp_path: Path, readers: int | None
) -> None:
    """Too many columns, or a quote left open until a field outgrows the limit, after several
    batches' worth of good rows: refused by the first pass, before any batch is stored."""
    from hongyan.contacts.sources import MAX_COLUMNS

    good = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(300))
    opened = '13900001111,"open\n' + "".join(f"139{i:08d},x,,,,,\n" for i in range(9000))
    for tail, code in (
        ("13900001111" + "," * MAX_COLUMNS + "\n", "import_line_too_long"),
        (opened, "import_line_too_long"),
    ):
        path = tmp_path / "half.csv"
        path.write_bytes((HEADER + good + tail).encode())
        opts = importer.ImportOptions(batch_size=50, pipeline=readers is not None, readers=readers)
        with pytest.raises(ImportFileError) as caught:
            service.import_path(runtime, tenant_id, path, opts)
        assert caught.value.code == code
        assert "nothing was imported" in caught.value.message_en
        assert _contacts(runtime, tenant_id) == []
        with runtime.engine.connect() as conn:  # not even the mapping's attribute (会员等级)
            assert fields.attribute_definitions(conn, tenant_id) == []


@pytest.mark.parametrize(
    ("readers", "fail_at", "in_memory"),
    [(None, 3, None), (2, 3, None), (None, 4, None), (2, 4, 60)],
)
def test_failure_in_the_database_is_resumable(
    runtime: Runtime,
    tenant_id: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    readers: int | None,
    fail_at: int,
    in_memory: int | None,
) -> None:
    """In process, and with two reader processes (the resumed run's numbers stored before
    come from reader 0). On SQLite a transaction holds two batches of 50 rows here: a failure
    in the third batch or in the fourth (the third then uncommitted) leaves the first two
    stored; PostgreSQL commits every batch. ``in_memory``: the numbers met move to disk
    after 60 (:class:`importer.SeenNumbers`), the repeat of a stored line found there."""
    if in_memory is not None:
        monkeypatch.setattr(importer, "SEEN_IN_MEMORY", in_memory)
    calls = {"n": 0}
    real = importer._Writer.insert

    def failing(self, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("disk full")
        real(self, rows)

    monkeypatch.setattr(importer._Writer, "insert", failing)
    lines = [f"138{i:08d},名,,,,,\n" for i in range(200)]
    lines[120] = "bad,坏,,,,,\n"
    lines[150] = "13800000007,重复,,,,,\n"  # repeats line 9 (stored before the failure)
    path = tmp_path / "c.csv"
    path.write_bytes((HEADER + "".join(lines)).encode())
    opts = importer.ImportOptions(
        batch_size=50, consent_source="s", consent_proof="p", pipeline=readers is not None,
        readers=readers, transaction_rows=100,
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        service.import_path(runtime, tenant_id, path, opts)
    read = 150 if fail_at == 4 and runtime.engine.dialect.name != "sqlite" else 100
    stored = read - (read > 120)  # line 121 is refused
    assert len(_contacts(runtime, tenant_id)) == stored  # the batches committed before
    with runtime.engine.connect() as conn:
        job = conn.execute(TenantScope(tenant_id).select(contact_imports)).mappings().one()
        granted = conn.execute(
            TenantScope(tenant_id).select(consent_records, sa.func.count())
        ).scalar_one()
    assert job["state"] == "failed" and job["error"]["code"] == "import_failed"
    assert job["result"]["line"] == read + 1 and job["result"]["imported"] == stored
    assert granted == stored
    monkeypatch.setattr(importer._Writer, "insert", real)
    other = tmp_path / "other.csv"
    other.write_bytes((HEADER + "13900000000,x,,,,,\n").encode())
    with pytest.raises(ValidationFailed):  # not the same file
        service.import_path(runtime, tenant_id, other, opts, resume=job["id"])
    done = service.import_path(runtime, tenant_id, path, opts, resume=job["id"])
    assert (done.rows, done.imported, done.invalid, done.duplicates) == (200, 198, 1, 1)
    assert done.rows == done.imported + done.updated + done.duplicates + done.invalid
    assert len(_contacts(runtime, tenant_id)) == 198
    with runtime.engine.connect() as conn:
        granted = conn.execute(
            TenantScope(tenant_id).select(consent_records, sa.func.count())
        ).scalar_one()
    assert granted == 198
    with pytest.raises(ValidationFailed):  # a finished import has nothing to resume
        service.import_path(runtime, tenant_id, path, opts, resume=job["id"])


def test_commits_per_transaction_size(runtime: Runtime, tenant_id: int) -> None:
    """Progress is reported at each commit: every batch on PostgreSQL, and on SQLite too when
    the batches are made in this process (the next is never waiting); ``transaction_rows``
    fixes the size on SQLite (whole batches)."""
    rows = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(150)).encode()
    seen: dict[int | None, list[int]] = {}
    for size in (None, 50, 60, 1):
        opts = importer.ImportOptions(batch_size=50, transaction_rows=size)
        commits: list[int] = seen.setdefault(size, [])
        service.import_stream(
            runtime, tenant_id, io.BytesIO(HEADER.encode() + rows), "f.csv", opts,
            progress=lambda r, commits=commits: commits.append(r.rows),  # type: ignore[misc]
        )  # fmt: skip
    sqlite = runtime.engine.dialect.name == "sqlite"
    assert seen[None] == seen[50] == seen[1] == [50, 100, 150]
    # whole batches: the second fills the first transaction
    assert seen[60] == ([100, 150] if sqlite else [50, 100, 150])
    assert len(_contacts(runtime, tenant_id)) == 150


def test_no_plaintext_at_rest(runtime: Runtime, tenant_id: int, tmp_path: Path) -> None:
    from tests.security.test_storage_plaintext import _database_bytes, _forms

    rng = random.Random(4)
    numbers = [
        f"{rng.choice(['138', '166', '199'])}{rng.randrange(10**7, 10**8)}" for _ in range(50)
    ]
    rows = "".join(f"{n},姓名{i}号,女,1991-03-04,上海,,\n" for i, n in enumerate(numbers))
    rows += "1389274651,坏行,,,,,\n"  # refused rows are kept encrypted too
    _import(runtime, tenant_id, (HEADER + rows).encode())
    data = _database_bytes(runtime, tmp_path)
    assert "上海".encode() in data  # the check reads the real storage
    for n in [*numbers, "1389274651"]:
        for form in _forms("+86" + n):
            assert form not in data
    assert "姓名7号".encode() not in data and b"1991-03-04" not in data


def test_ciphertexts_are_tenant_bound(runtime: Runtime, tenant_id: int) -> None:
    _import(runtime, tenant_id, (HEADER + "13812345678,李,,,,,\n").encode())
    with runtime.engine.connect() as conn:
        row = conn.execute(
            unscoped(sa.select(contacts.c.phone_cipher, contacts.c.name_cipher), "test")
        ).one()
    ring = runtime.keyring
    assert ring.decrypt(row.phone_cipher, f"tenant:{tenant_id}:phone") == "+8613812345678"
    assert ring.decrypt(row.name_cipher, importer.name_context(tenant_id)) == "李"
    from hongyan.security.rotation import ENCRYPTED_COLUMNS

    listed = {(c.table.name, c.column) for c in ENCRYPTED_COLUMNS}
    assert {
        ("contacts", "phone_cipher"),
        ("contacts", "name_cipher"),
        ("contacts", "birthday_cipher"),
        ("contact_import_errors", "raw_cipher"),
    } <= listed


def test_mapping_rules() -> None:
    header = ["Mobile", "备注", "1bad", "城市"]
    plan = importer.plan_mapping(header, {"备注": "ignore"})
    assert importer.describe_mapping(header, plan) == {
        "Mobile": "phone",
        "备注": "ignore",
        "1bad": "ignore",
        "城市": "city",
    }
    with pytest.raises(ValidationFailed):
        importer.plan_mapping(["手机", "电话"], {})  # two phone columns
    with pytest.raises(ValidationFailed):
        importer.plan_mapping(["手机"], {"手机": "nonsense"})
    with pytest.raises(ValidationFailed):
        importer.plan_mapping(["手机"], {"不存在": "name"})
    with pytest.raises(ValidationFailed):
        importer.ImportOptions(consent_source="x").check()  # a source needs its proof


@pytest.mark.parametrize("readers", [1, 3])
def test_pipelined_reader_gives_the_same_result(
    runtime: Runtime, tenant_id: int, tmp_path: Path, readers: int
) -> None:
    """The readers in other processes: same counters as in-process, broken files refused
    before anything is stored."""
    rows = "".join(f"138{i:08d},名{i},女,1990-01-0{i % 9 + 1},上海,VIP,金卡\n" for i in range(300))
    rows += "13800000005,再来,,,,,\nbad,坏,,,,,\n"
    path = tmp_path / "big.csv"
    path.write_bytes((HEADER + rows).encode("gbk"))
    opts = importer.ImportOptions(pipeline=True, batch_size=64, readers=readers)
    result = service.import_path(runtime, tenant_id, path, opts)
    assert (result.rows, result.imported, result.duplicates, result.invalid) == (302, 300, 1, 1)
    [c] = [c for c in _contacts(runtime, tenant_id) if c["phone_masked"] == "138****0005"]
    assert c["name_masked"] == "再*" and c["tags"] == ["VIP"]
    broken = tmp_path / "broken.csv"
    broken.write_bytes((HEADER + rows).encode("gbk") + b"\x81\x20\n" + rows.encode())
    before = len(_contacts(runtime, tenant_id))
    with pytest.raises(ImportFileError) as caught:
        service.import_path(runtime, tenant_id, broken, opts)
    assert caught.value.code == "import_encoding"
    assert len(_contacts(runtime, tenant_id)) == before


def test_key_rotation_covers_contacts(runtime: Runtime, tenant_id: int) -> None:
    from hongyan.security.keyring import KeyRing
    from hongyan.security.rotation import pending, rotate

    _import(runtime, tenant_id, (HEADER + "13812345678,李,男,1990-01-02,,,\nbad,x,,,,,\n").encode())
    s = runtime.settings
    new = KeyRing.parse(f"{s.data_keys},k2:{KeyRing.generate_key()}", "k2", s.index_key)
    assert pending(runtime.engine, new) == 4  # number, name, birthday, refused row
    rotate(runtime.engine, new)
    assert pending(runtime.engine, new) == 0
    with runtime.engine.begin() as conn:
        out = service.export(conn, runtime.clock, new, tenant_id, "13812345678", "t")
    assert out["contact"]["name"] == "李" and out["contact"]["birthday"] == "1990-01-02"


def test_a_contact_made_during_a_first_import_is_updated_not_doubled(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first import skips looking its numbers up; an event that makes one of them a contact
    between two batches (another connection, committed) turns that batch back to lookups."""
    from datetime import UTC, datetime

    from hongyan.contacts import events

    real = importer.consume
    calls: list[bool] = []

    def counting(w, batch, result, extra_tags, *, absent=False):  # type: ignore[no-untyped-def]
        calls.append(absent)
        real(w, batch, result, extra_tags, absent=absent)

    def after_a_batch(result: importer.ImportResult) -> None:
        if result.rows == 50:  # the first batch is committed: an event from a number of the next
            with runtime.engine.begin() as conn:
                made = events.ingest(
                    conn, runtime.clock, runtime.keyring, tenant_id,
                    events.parse_batch(
                        [{"event_id": "e1", "kind": "browse", "phone": "13800000060",
                          "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat()}],
                        UTC,
                        now=runtime.clock.now(),
                    ),
                )  # fmt: skip
            assert made.contacts_created == 1

    monkeypatch.setattr(importer, "consume", counting)
    rows = "".join(f"138{i:08d},名{i},,,,VIP,\n" for i in range(150))
    opts = importer.ImportOptions(
        batch_size=50, consent_source="s", consent_proof="p", transaction_rows=50
    )
    result = service.import_stream(
        runtime, tenant_id, io.BytesIO((HEADER + rows).encode()), "f.csv", opts,
        progress=after_a_batch,
    )  # fmt: skip
    assert (result.rows, result.imported, result.updated) == (150, 149, 1)
    # batch 1 and the failed try of batch 2 took the shortcut; batch 2 again and the rest looked up
    assert calls[:2] == [True, True] and len(calls) >= 4 and not any(calls[2:])
    listed = _contacts(runtime, tenant_id)
    assert len(listed) == 150
    [made] = [c for c in listed if c["phone_masked"] == "138****0060"]
    assert made["name_masked"] == "名**" and made["tags"] == ["VIP"]
    with runtime.engine.connect() as conn:
        granted = conn.execute(
            TenantScope(tenant_id).select(consent_records, sa.func.count())
        ).scalar_one()
    assert granted == 150


def test_a_satellite_number_is_stored_without_a_country(runtime: Runtime, tenant_id: int) -> None:
    """Satellite mobiles (+881 Iridium/Globalstar, +870 Inmarsat) are valid mobiles with no
    country: phonenumbers calls their region "001", which does not fit the two-letter country
    column (PostgreSQL refused the whole batch: value too long for character varying(2))."""
    from hongyan.contacts.numbers import country_of

    rows = "13812345678,李,,,,,\n+881612345678,铱星,,,,,\n+870301234567,海事,,,,,\n"
    result = _import(runtime, tenant_id, (HEADER + rows).encode())
    assert (result.imported, result.invalid) == (3, 0)
    with runtime.engine.connect() as conn:
        countries = conn.execute(
            TenantScope(tenant_id).select(contacts, contacts.c.country, contacts.c.carrier)
        ).all()
    assert sorted(countries) == [("CN", "cmcc"), ("ZZ", "intl"), ("ZZ", "intl")]
    assert country_of("+881612345678") == "ZZ" and country_of("+870301234567") == "ZZ"


def test_an_import_never_revives_a_withdrawn_notification_consent(
    runtime: Runtime, tenant_id: int, clock: object
) -> None:
    """A marketing revocation suppresses the number (test_suppressed_numbers_stay_suppressed);
    a notification one is kept by not granting that purpose again, while the number's other
    purposes and the other numbers are granted as asked."""
    from datetime import timedelta

    from hongyan.contacts.suppression import ConsentChange, current_consent, record_consent

    with runtime.engine.begin() as conn:
        record_consent(conn, runtime.clock, runtime.keyring, [
            ConsentChange(tenant_id, "+8613800000001", "notification", "granted", "api", "p", "t"),
        ])  # fmt: skip
    runtime.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    with runtime.engine.begin() as conn:
        record_consent(conn, runtime.clock, runtime.keyring, [
            ConsentChange(tenant_id, "+8613800000001", "notification", "revoked", "reply", "TD",
                          "t"),
        ])  # fmt: skip
    runtime.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    rows = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(3))
    opts = importer.ImportOptions(
        consent_source="门店",
        consent_proof="勾选",
        consent_purposes=("marketing", "notification"),
    )
    service.import_stream(runtime, tenant_id, io.BytesIO((HEADER + rows).encode()), "f.csv", opts)
    with runtime.engine.connect() as conn:

        def now(phone: str, purpose: str) -> str | None:
            record = current_consent(conn, runtime.keyring, tenant_id, phone, purpose)
            return None if record is None else str(record["action"])

        assert now("+8613800000001", "notification") == "revoked"
        assert now("+8613800000001", "marketing") == "granted"
        assert now("+8613800000002", "notification") == "granted"
        total = conn.execute(
            TenantScope(tenant_id).select(consent_records, sa.func.count())
        ).scalar_one()
    assert total == 2 + 5  # the two before, and 3 marketing + 2 notification grants


def test_consent_for_two_purposes_is_one_grant_each(runtime: Runtime, tenant_id: int) -> None:
    from hongyan.contacts.suppression import phone_context

    rows = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(30))
    opts = importer.ImportOptions(
        consent_source="门店", consent_proof="勾选", consent_purposes=("marketing", "notification"),
        actor="tester", batch_size=7,
    )  # fmt: skip
    result = service.import_stream(
        runtime, tenant_id, io.BytesIO((HEADER + rows).encode()), "f.csv", opts
    )
    assert result.imported == 30
    index = runtime.keyring.blind_index("+8613800000029", phone_context(tenant_id))
    with runtime.engine.connect() as conn:
        by_purpose = dict(
            conn.execute(
                TenantScope(tenant_id)
                .select(consent_records, consent_records.c.purpose, sa.func.count())
                .group_by(consent_records.c.purpose)
            ).all()
        )
        one = (
            conn.execute(
                TenantScope(tenant_id)
                .select(consent_records)
                .where(consent_records.c.phone_index == index)
                .order_by(consent_records.c.purpose)
            )
            .mappings()
            .all()
        )
    assert by_purpose == {"marketing": 30, "notification": 30}
    assert [(r["purpose"], r["action"], r["source"], r["proof"], r["actor"]) for r in one] == [
        ("marketing", "granted", "门店", "勾选", "tester"),
        ("notification", "granted", "门店", "勾选", "tester"),
    ]
    assert one[0]["at"] == runtime.clock.now()


def _by_number(runtime: Runtime, tenant_id: int, count: int) -> list[dict[str, object]]:
    """Contacts 13800000000 … in number order: id, updated_at, time zone, name, digest."""
    ctx = suppression.phone_context(tenant_id)
    c = contacts.c
    with runtime.engine.connect() as conn:
        rows = {
            bytes(r.phone_index): r
            for r in conn.execute(
                TenantScope(tenant_id).select(
                    contacts, c.phone_index, c.id, c.updated_at, c.time_zone, c.name_cipher,
                    c.import_digest,
                )
            )
        }  # fmt: skip
    out = []
    for i in range(count):
        r = rows[runtime.keyring.blind_index(f"+86138{i:08d}", ctx)]
        name = runtime.keyring.decrypt(bytes(r.name_cipher), importer.name_context(tenant_id))
        digest = None if r.import_digest is None else bytes(r.import_digest)
        out.append({"id": r.id, "at": r.updated_at, "zone": r.time_zone, "name": name,
                    "digest": digest})  # fmt: skip
    return out


def test_a_reimport_writes_only_the_contacts_it_changes(runtime: Runtime, tenant_id: int) -> None:
    """A contact keeps the digest of the file row last applied to it: the same row again is not
    written (its update would change nothing), a changed row is, and so is the row of a
    contact changed otherwise since: the database clears the digest on any other update (here
    the console sets a time zone, which the file's zone then replaces, as it always did)."""
    from datetime import timedelta

    header = "手机号,姓名,时区,会员等级\n"
    lines = [f"138{i:08d},名{i},Asia/Shanghai,金卡\n" for i in range(30)]
    _import(runtime, tenant_id, (header + "".join(lines)).encode(), batch_size=8)
    before = _by_number(runtime, tenant_id, 30)
    assert all(b["digest"] is not None for b in before)
    assert len({b["digest"] for b in before}) == 30
    runtime.clock.advance(timedelta(hours=1))
    with runtime.engine.begin() as conn:
        service.set_time_zone(
            conn, runtime.clock, tenant_id, int(before[5]["id"]), "Asia/Tokyo", actor="t"
        )
    changed_elsewhere = _by_number(runtime, tenant_id, 30)[5]
    assert changed_elsewhere["zone"] == "Asia/Tokyo" and changed_elsewhere["digest"] is None
    runtime.clock.advance(timedelta(hours=1))
    lines[3] = "13800000003,改名,Asia/Shanghai,金卡\n"
    again = _import(
        runtime, tenant_id, (header + "".join(lines)).encode(), batch_size=8, tags=("回购",),
        consent_source="门店", consent_proof="勾选",
    )  # fmt: skip
    assert (again.imported, again.updated) == (0, 30)
    with runtime.engine.connect() as conn:  # tags and consent are written for every row
        scope = TenantScope(tenant_id)
        granted = conn.execute(scope.select(consent_records, sa.func.count())).scalar_one()
        tagged = conn.execute(
            scope.select(contact_tags, sa.func.count()).where(contact_tags.c.tag == "回购")
        ).scalar_one()
    assert granted == tagged == 30
    after = _by_number(runtime, tenant_id, 30)
    written = {i for i in range(30) if after[i]["at"] != before[i]["at"]}
    assert written == {3, 5}
    assert after[3]["at"] == after[5]["at"] == runtime.clock.now()
    assert after[3]["name"] == "改名" and after[3]["digest"] not in (None, before[3]["digest"])
    assert after[5]["zone"] == "Asia/Shanghai" and after[5]["digest"] == before[5]["digest"]
    assert [a["name"] for a in after[:3]] == ["名0", "名1", "名2"]


def test_an_update_merges_attributes_and_keeps_what_a_row_leaves_empty(
    runtime: Runtime, tenant_id: int
) -> None:
    """Existing contacts updated across batches (on PostgreSQL, staged and merged by the
    server): later attribute keys win and the others stay, an empty cell keeps its value."""
    header = "手机号,姓名,城市,等级,积分\n"
    first = "".join(f"138{i:08d},甲{i},上海,金卡,{i}\n" for i in range(40))
    done = _import(runtime, tenant_id, (header + first).encode(), batch_size=16, tags=("首购",))
    assert done.imported == 40
    later = "".join(
        f"138{i:08d},{'乙' if i % 2 else ''},,{'银卡' if i % 3 else ''},\n" for i in range(40)
    )
    header2 = "手机号,姓名,城市,等级,备注\n"
    again = _import(
        runtime, tenant_id, (header2 + later.replace(",\n", ",新\n")).encode(), batch_size=16,
        tags=("首购", "回购"),
    )  # fmt: skip
    assert (again.imported, again.updated) == (0, 40)
    by_number = {}
    with runtime.engine.connect() as conn:
        for i in range(40):
            cid = service.find_id(conn, runtime.keyring, tenant_id, f"+86138{i:08d}")
            by_number[i] = service.get_contact(conn, tenant_id, cid or 0)
    for i, c in by_number.items():
        assert c["name_masked"] == importer.mask_name("乙" if i % 2 else f"甲{i}"), c
        assert c["city"] == "上海"
        assert c["attrs"] == {"等级": "银卡" if i % 3 else "金卡", "积分": str(i), "备注": "新"}
        assert sorted(c["tags"]) == ["回购", "首购"]


def test_lookups_and_staged_updates_run_on_indexes_without_statistics(
    runtime: Runtime, tenant_id: int
) -> None:
    """PostgreSQL: the statements a re-import runs on a contacts table without statistics
    descend its indexes per number; they neither scan nor hash the tenant's contacts."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("planner behaviour is PostgreSQL's")
    from sqlalchemy.dialects import postgresql

    from hongyan.db import bulk

    # enough contacts that a scan of the tenant's would cost the planner more than an index
    # descent (for a few hundred either is cheap, and it may scan)
    rows = "".join(f"138{i:08d},名{i},,,,,\n" for i in range(3000))
    _import(runtime, tenant_id, (HEADER + rows).encode())
    dialect = postgresql.dialect()
    with runtime.engine.begin() as conn:
        w = importer._Writer(
            conn, runtime.keyring, tenant_id, runtime.clock.now(), importer.ImportOptions(),
            importer.segment_table(),
        )  # fmt: skip
        keys = list(
            w.existing(
                [
                    runtime.keyring.blind_index(f"+86138{i:08d}", f"tenant:{tenant_id}:phone")
                    for i in range(3)
                ]
            )
        )
        assert len(keys) == 3
        lookup = bulk.fetch_per_key_sql(contacts, ("id", "phone_index"), "phone_index", dialect, 32)
        plans = [
            conn.exec_driver_sql("EXPLAIN " + lookup, (b"".join(keys), 3, tenant_id)),
        ]
        conn.exec_driver_sql(importer._STAGE_UPDATES)
        packed = [w.packed_row(importer.Parsed(f"+86138{i:08d}", k)) for i, k in enumerate(keys)]
        now = runtime.clock.now()
        bulk.copy_packed(
            conn, w.scope, w.packer, packed,
            {"source": "derived", "created_at": now, "updated_at": now}, into=importer._STAGING,
        )  # fmt: skip
        plans.append(conn.exec_driver_sql("EXPLAIN " + importer._PG_LOCK_STAGED, (tenant_id,)))
        plans.append(
            conn.exec_driver_sql(
                "EXPLAIN " + importer._PG_STAGED_UPDATE, (now, tenant_id, tenant_id)
            )
        )
        texts = ["\n".join(r[0] for r in plan) for plan in plans]
        for text in texts:
            assert "uq_contacts_number" in text, text
            assert "Seq Scan on contacts" not in text and "Hash" not in text, text
            assert "Bitmap" not in text and "Merge" not in text, text
        # the staged rows sorted by blind index before any contact is locked
        lock = texts[1]
        assert "LockRows" in lock and lock.index("Sort") > lock.index("Nested Loop"), lock
        assert "Tid Scan on contacts" in texts[2], texts[2]


def test_a_contact_changed_during_an_update_gets_the_import_values(
    runtime: Runtime, tenant_id: int
) -> None:
    """PostgreSQL: another transaction holds a contact the import updates; once it commits,
    the import updates the contact's newest version (neither side's change is lost)."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("row locks and snapshots are PostgreSQL's")
    import threading
    import time

    header = "手机号,姓名,城市,等级\n"
    _import(runtime, tenant_id, (header + "13812345678,甲甲,上海,金卡\n").encode())
    with runtime.engine.connect() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, "+8613812345678")
    done: list[object] = []
    other = runtime.engine.connect()
    try:
        tx = other.begin()
        other.execute(
            TenantScope(tenant_id).update(contacts).where(contacts.c.id == cid).values(city="杭州")
        )

        def again() -> None:
            done.append(_import(runtime, tenant_id, (header + "13812345678,乙乙,,银卡\n").encode()))

        worker = threading.Thread(target=again)
        worker.start()
        with runtime.engine.connect() as watch:  # until the import waits for the row's lock
            for _ in range(400):
                waiting = watch.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).scalar_one()
                watch.rollback()  # the activity view is read once per transaction
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting, "the import never waited for the contact's lock"
        tx.commit()
        worker.join(timeout=30)
    finally:
        other.close()
    assert done and done[0].updated == 1  # type: ignore[attr-defined]
    with runtime.engine.connect() as conn:
        got = service.get_contact(conn, tenant_id, cid or 0)
    assert (got["name_masked"], got["city"], got["attrs"]) == ("乙*", "杭州", {"等级": "银卡"})


def test_a_batch_crosses_to_the_writer_unchanged() -> None:
    """Readers send batches as marshal bytes: every field comes back equal, row tuples as
    tuples (the writer's driver binds them), and a value marshal cannot write is refused."""
    batch = importer.Batch(
        line=9, fraction=0.5, rows=3, invalid=1, duplicates=1,
        errors=[{"line": 4, "reason": "bad_gender", "message": {"zh": "性别", "en": "g"}}],
        bad=[(4, "bad_gender", b"\x01sealed")],
        items=[
            (b"k" * 32, True, ("VIP", "门店A"),
             (b"k" * 32, b"c", "138****5678", None, 1990, False, '{"等级":"金"}'), None),
            (b"j" * 32, False, (), b"\x00\x13packed", "Asia/Tokyo"),
        ],
        stored=[1, 2**63 - 1],
    )  # fmt: skip
    back = importer._batch_of(importer._batch_bytes(batch))
    assert back == batch
    assert type(back.items[0]) is tuple and type(back.items[0][3]) is tuple
    with pytest.raises(ValueError):
        importer._batch_bytes(importer.Batch(line=1, fraction=0.0, items=[(object(),)]))  # type: ignore[list-item]


def test_a_sqlite_transaction_takes_the_next_batch_only_when_it_waits() -> None:
    """importer._hold: more batches while the transaction is young, under the row limit and
    the next batch is already waiting; a fixed transaction_rows decides alone."""
    waiting, absent = importer._Probe(), importer._Probe()
    waiting.ready = lambda: True
    hold, rows, young = importer._hold, importer.SQLITE_TRANSACTION_ROWS, 0.1
    default = importer.ImportOptions()
    assert hold(default, 25_000, young, waiting)
    assert not hold(default, 25_000, young, absent)
    assert not hold(default, rows, young, waiting)
    assert not hold(default, 25_000, importer.SQLITE_TRANSACTION_SECONDS, waiting)
    fixed = importer.ImportOptions(transaction_rows=100)
    assert hold(fixed, 99, 60.0, absent) and not hold(fixed, 100, 0.0, waiting)


def _finished(runtime: Runtime, tenant_id: int, import_id: int) -> dict[str, object]:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with runtime.engine.connect() as conn:
            job = importer.get_job(conn, tenant_id, import_id)
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("the import did not finish")


def _emptied(folder: Path) -> list[Path]:
    """What is left in ``folder`` once the import's thread has let its file go (it does so
    after the job's row says how the import ended)."""
    import time

    deadline = time.monotonic() + 30
    while (left := list(folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _fail_insert(monkeypatch: pytest.MonkeyPatch, at: int) -> Any:
    """The writer's insert fails at its ``at``-th call ("disk full"); returns the real one."""
    calls = {"n": 0}
    real = importer._Writer.insert

    def failing(self, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == at:
            raise RuntimeError("disk full")
        real(self, rows)

    monkeypatch.setattr(importer._Writer, "insert", failing)
    return real


def test_an_uploaded_import_that_failed_is_resumed_from_its_kept_file(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's and the console's path: the upload is kept after a failure half-way (and only
    then), a resume takes it (a second resume at once finds nothing), goes on from the next
    batch, and deletes it when done."""
    real = _fail_insert(monkeypatch, at=3)
    data = (HEADER + "".join(f"138{i:08d},名,,,,,\n" for i in range(200))).encode()
    path = service.save_upload(runtime, tenant_id, io.BytesIO(data), 1 << 20)
    opts = importer.ImportOptions(batch_size=50, consent_source="s", consent_proof="p")
    with runtime.engine.begin() as conn:
        import_id = service.create_import(conn, runtime.clock, tenant_id, path, "c.csv", opts)
    service.run_in_background(runtime, tenant_id, import_id, path, "c.csv", opts)
    job = _finished(runtime, tenant_id, import_id)
    kept = service.kept_upload(runtime, tenant_id, import_id)
    assert job["state"] == "failed" and job["result"]["line"] == 101  # type: ignore[index]
    assert kept.is_file() and not path.exists()
    assert "resumed" in job["error"]["message"]["en"]  # type: ignore[index]
    monkeypatch.setattr(importer._Writer, "insert", real)
    with runtime.engine.begin() as conn:  # the console's claim, before its thread has run
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(state="pending")
        )
    with pytest.raises(ValidationFailed, match="already running"):  # the CLI's --resume beside it
        service.import_path(runtime, tenant_id, kept, opts, resume=import_id)
    assert len(_contacts(runtime, tenant_id)) == 100
    with runtime.engine.begin() as conn:
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(state="failed")
        )
    service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    with pytest.raises(ValidationFailed):  # the file is taken, or the job no longer failed
        service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    job = _finished(runtime, tenant_id, import_id)
    assert job["state"] == "done" and job["result"]["imported"] == 200  # type: ignore[index]
    assert len(_contacts(runtime, tenant_id)) == 200
    with pytest.raises(ValidationFailed):  # done: nothing to resume
        service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    assert not _emptied(kept.parent)  # no upload left behind


def test_a_console_resume_that_cannot_start_goes_back_to_failed_with_its_file(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume refused before its run takes the job (here the kept file no longer being the
    file the import began with) leaves the job failed and the file kept, not pending with the
    file gone; and a resume of a job the CLI took meanwhile is refused, the file put back."""
    real = _fail_insert(monkeypatch, at=2)
    data = (HEADER + "".join(f"138{i:08d},名,,,,,\n" for i in range(120))).encode()
    path = service.save_upload(runtime, tenant_id, io.BytesIO(data), 1 << 20)
    opts = importer.ImportOptions(batch_size=50)
    with runtime.engine.begin() as conn:
        import_id = service.create_import(conn, runtime.clock, tenant_id, path, "c.csv", opts)
    service.run_in_background(runtime, tenant_id, import_id, path, "c.csv", opts)
    assert _finished(runtime, tenant_id, import_id)["state"] == "failed"
    monkeypatch.setattr(importer._Writer, "insert", real)
    kept = service.kept_upload(runtime, tenant_id, import_id)
    original = kept.read_bytes()
    kept.write_bytes(original + b"13900000000,x,,,,,\n")  # no longer the file it began with
    service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    job = _finished(runtime, tenant_id, import_id)
    assert job["state"] == "failed" and "not the file" in job["error"]["message"]["en"]  # type: ignore[index]
    assert kept.is_file()
    kept.write_bytes(original)
    with runtime.engine.begin() as conn:  # the CLI's --resume took it meanwhile
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(state="running")
        )
    # The interleaving: its check saw the job failed, then the CLI took it before the update.
    monkeypatch.setattr(service, "_resumable", lambda *_: True)
    with pytest.raises(ValidationFailed, match="already running"):
        service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    assert kept.is_file()


def test_an_upload_that_fails_before_storing_anything_is_not_kept(
    runtime: Runtime, tenant_id: int
) -> None:
    path = service.save_upload(runtime, tenant_id, io.BytesIO(b"\x00\x01binary" * 99), 1 << 20)
    opts = importer.ImportOptions()
    with runtime.engine.begin() as conn:
        import_id = service.create_import(conn, runtime.clock, tenant_id, path, "x.csv", opts)
    service.run_in_background(runtime, tenant_id, import_id, path, "x.csv", opts)
    assert _finished(runtime, tenant_id, import_id)["state"] == "failed"
    assert not _emptied(path.parent)
    with pytest.raises(ValidationFailed):
        service.resume_in_background(runtime, tenant_id, import_id, "user:1")


def test_an_import_whose_process_died_says_how_far_it_got(
    runtime: Runtime, tenant_id: int, tmp_path: Path
) -> None:
    """``retention run`` marks imports left running a day as failed, with the line they had
    committed (and then they resume like any failed import); one that stored nothing says so."""
    from datetime import timedelta

    from hongyan.contacts import retention

    lines = [f"138{i:08d},名,,,,,\n" for i in range(120)]
    path = tmp_path / "c.csv"
    path.write_bytes((HEADER + "".join(lines)).encode())
    opts = importer.ImportOptions(batch_size=50)
    first = service.import_path(runtime, tenant_id, path, opts)
    with runtime.engine.begin() as conn:  # as if its process had died after two batches
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == first.import_id)
            .values(
                state="running",
                result={"rows": 100, "imported": 100, "line": 101, "errors": []},
                error=None,
            )
        )
        empty = importer.create_job(
            conn, runtime.clock, tenant_id, kind="contacts", filename="e.csv", options={},
            actor="t", sha256=None,
        )  # fmt: skip
    assert retention.run(runtime)["stuck_imports"] == 0  # not yet a day
    runtime.clock.advance(timedelta(days=1, minutes=1))  # type: ignore[attr-defined]
    with runtime.engine.begin() as conn:  # a resume started now, of an import made a day ago
        resuming = importer.create_job(
            conn, runtime.clock, tenant_id, kind="contacts", filename="r.csv", options={},
            actor="t", sha256=None,
        )  # fmt: skip
        conn.execute(
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == resuming)
            .values(
                state="running",
                created_at=runtime.clock.now() - timedelta(days=3),
                started_at=runtime.clock.now(),
            )
        )
    assert retention.run(runtime)["stuck_imports"] == 2  # not the resumed one, still running
    with runtime.engine.connect() as conn:
        assert importer.get_job(conn, tenant_id, resuming)["state"] == "running"
    with runtime.engine.connect() as conn:
        died = importer.get_job(conn, tenant_id, first.import_id)
        nothing = importer.get_job(conn, tenant_id, empty)
    assert died["state"] == "failed" and "line 101" in died["error"]["message"]["en"]
    assert f"--resume {first.import_id}" in died["error"]["message"]["en"]
    assert "nothing was imported" in nothing["error"]["message"]["en"]
    resumed = service.import_path(runtime, tenant_id, path, opts, resume=first.import_id)
    assert resumed.rows == 120 and len(_contacts(runtime, tenant_id)) == 120


def test_erased_numbers_are_counted_across_a_resume(
    runtime: Runtime, tenant_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbers erased at the person's request are left out and counted ``erased``; a resumed
    import keeps the count of the part stored before, so its rows still add up."""
    erased = [f"+86138{i:08d}" for i in range(0, 100, 10)]  # ten, all in the first two batches
    with runtime.engine.begin() as conn:
        for number in erased:
            service.forget(conn, runtime.clock, runtime.keyring, tenant_id, number, "t")
    real = _fail_insert(monkeypatch, at=3)
    data = (HEADER + "".join(f"138{i:08d},名,,,,,\n" for i in range(200))).encode()
    opts = importer.ImportOptions(batch_size=50)
    with pytest.raises(RuntimeError, match="disk full"):
        service.import_stream(runtime, tenant_id, io.BytesIO(data), "c.csv", opts)
    with runtime.engine.connect() as conn:
        job = importer.list_jobs(conn, tenant_id)[0]
    assert job["state"] == "failed" and job["result"]["erased"] == 10
    monkeypatch.setattr(importer._Writer, "insert", real)
    done = service.import_stream(
        runtime, tenant_id, io.BytesIO(data), "c.csv", opts, import_id=job["id"], resume=True
    )
    assert (done.rows, done.erased, done.imported) == (200, 10, 190)
    assert done.rows == done.imported + done.updated + done.duplicates + done.invalid + done.erased
    assert len(_contacts(runtime, tenant_id)) == 190


def test_a_resume_waits_for_a_failed_run_to_put_its_file_back(
    runtime: Runtime, tenant_id: int
) -> None:
    """A resumed run that failed says so a moment before its thread puts the file back; a
    resume asked in that moment waits for the file instead of answering that it is gone."""
    import threading
    import time

    data = (HEADER + "".join(f"138{i:08d},名,,,,,\n" for i in range(120))).encode()
    path = service.save_upload(runtime, tenant_id, io.BytesIO(data), 1 << 20)
    opts = importer.ImportOptions(batch_size=50)
    with runtime.engine.begin() as conn:
        import_id = service.create_import(conn, runtime.clock, tenant_id, path, "c.csv", opts)
        conn.execute(  # as a run that failed after storing a batch leaves it
            TenantScope(tenant_id)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(state="failed", result={"line": 52, "rows": 50})
        )
    kept = service.kept_upload(runtime, tenant_id, import_id)
    taken = kept.with_name(f"{kept.name}.resuming")
    path.replace(taken)  # the failed run's thread has not put it back yet
    back = threading.Timer(0.3, lambda: taken.replace(kept))
    back.start()
    started = time.monotonic()
    service.resume_in_background(runtime, tenant_id, import_id, "user:1")
    assert time.monotonic() - started >= 0.25
    assert _finished(runtime, tenant_id, import_id)["state"] == "done"
