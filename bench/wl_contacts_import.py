"""Contact import: a generated 1,000,000-row CSV on SQLite and PostgreSQL, with peak memory.

The file: 70 % clean numbers (``13812345678``), 20 % written messily (``138 1234 5678``,
``+86-138…``, ``0086…``, full-width digits, Excel's leading apostrophe), 5 % invalid (wrong
length, unallocated segment, letters) and 5 % repeats of an earlier number; columns 手机号, 姓名,
性别, 生日, 城市, 标签, 会员等级.

Anchors, measured in the same run on the same file:
* the database's own bulk load with no validation or encryption: the ``sqlite3`` shell's
  ``.import`` (a Python ``executemany`` of ``csv.reader`` rows if the shell is missing) and
  PostgreSQL ``COPY … FROM STDIN (FORMAT csv)``;
* a straightforward pandas + ``phonenumbers`` + ``to_sql`` script (read the CSV, parse and
  validate each number with ``phonenumbers``, format E.164, drop invalid and duplicate rows,
  write with ``to_sql``), on SQLite.

Each import runs in its own process so its peak memory (``ru_maxrss``) is its own, with its CPU
seconds beside the wall time. Ours then imports the file a second time at once (``again``:
every number exists and every row is the one its contact last had, so each is looked up and
left as it is), and then the file with every row's member level changed (``changed``: every
row an update, the path of a refreshed export whose rows all moved). A large import reads in
other processes. Sampled every 50 ms, each process by its proportional set size (PSS, a page
shared by n processes counted 1/n in each): ``reader_peak_mb``, the largest child's, and
``total_peak_mb``, the largest sum of the importing process's and all its children's (readers,
multiprocessing's resource tracker), which is the figure the memory goal is about.
``total_peak_rss_mb`` sums resident sizes instead, which counts a page twice where a reader,
forked and not yet exec'd, still shares the importing process's pages.
``HONGYAN_BENCH_ROWS`` sets the size (default 1,000,000); ``HONGYAN_TEST_PG`` the server.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROWS = int(os.environ.get("HONGYAN_BENCH_ROWS", "1000000"))
PG_URL = os.environ.get("HONGYAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SEGMENTS = ("138", "139", "135", "186", "189", "177", "166", "199", "198", "191", "150", "187")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华"
CITIES = ("上海", "北京", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆")
LEVELS = ("普通", "银卡", "金卡", "钻石")
FULL = str.maketrans("0123456789", "０１２３４５６７８９")


def _messy(n: str, rng: random.Random) -> str:
    pick = rng.randrange(6)
    if pick == 0:
        return f"{n[:3]} {n[3:7]} {n[7:]}"
    if pick == 1:
        return f"+86-{n[:3]}-{n[3:7]}-{n[7:]}"
    if pick == 2:
        return "0086" + n
    if pick == 3:
        return n.translate(FULL)
    if pick == 4:
        return "'" + n
    return "+86 " + n


def _invalid(rng: random.Random) -> str:
    pick = rng.randrange(3)
    if pick == 0:
        return "138" + str(rng.randrange(10**6, 10**7))  # 10 digits
    if pick == 1:
        return "140" + str(rng.randrange(10**7, 10**8))  # no mobile segment
    return "13x" + str(rng.randrange(10**7, 10**8))


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    used: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["手机号", "姓名", "性别", "生日", "城市", "标签", "会员等级"])
        for i in range(rows):
            roll = rng.random()
            if roll < 0.05 and used:
                phone = rng.choice(used)
            elif roll < 0.10:
                phone = _invalid(rng)
            else:
                n = f"{rng.choice(SEGMENTS)}{rng.randrange(10**8):08d}"
                used.append(n) if len(used) < 100_000 else None
                phone = _messy(n, rng) if roll < 0.30 else n
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if i % 2 else "")
            born = (
                f"{rng.randrange(1960, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
            )
            w.writerow(
                [
                    phone,
                    name,
                    "女" if i % 3 else "男",
                    born,
                    rng.choice(CITIES),
                    "VIP" if i % 10 == 0 else "",
                    rng.choice(LEVELS),
                ]
            )


# -- children (each measured in its own process) ---------------------------------------------------


def bench_tenant(url: str, var_dir: Path) -> tuple[Any, int, Any]:
    """A runtime on ``url`` (migrated, fresh keys), a new tenant's id and the import options
    the contact benches use."""
    from hongyan.contacts import importer
    from hongyan.db import migrate
    from hongyan.runtime import Runtime
    from hongyan.security.keyring import KeyRing
    from hongyan.settings import Settings
    from hongyan.tenants import service as tenants

    settings = Settings(
        env="test",
        var_dir=var_dir,
        database_url=url,
        data_keys=f"k1:{KeyRing.generate_key()}",
        active_key="k1",
        index_key=KeyRing.generate_key(),
        session_secret="bench-" + uuid.uuid4().hex,
    )
    runtime = Runtime.create(settings)
    migrate.upgrade(runtime.engine)
    with runtime.engine.begin() as conn:
        tenant = tenants.create_tenant(conn, runtime.clock, slug="bench", name="bench")
    options = importer.ImportOptions(consent_source="bench", consent_proof="generated")
    return runtime, tenant.id, options


def _child_hongyan(url: str, path: str) -> dict[str, Any]:
    from hongyan.contacts import service

    runtime, tenant_id, options = bench_tenant(url, Path(path).parent / "var")
    t0 = time.perf_counter()
    result = service.import_path(runtime, tenant_id, Path(path), options)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds()
    # The same file again at once (every number now exists, before any statistics are
    # gathered): each row is the one its contact last had (its import digest), so none is
    # written again.
    t1 = time.perf_counter()
    again = service.import_path(runtime, tenant_id, Path(path), options)
    again_seconds = time.perf_counter() - t1
    cpu_again = _cpu_seconds()
    # Then every row changed (its member level): every contact updated.
    changed_path = _changed_copy(Path(path))
    t2 = time.perf_counter()
    changed = service.import_path(runtime, tenant_id, changed_path, options)
    changed_seconds = time.perf_counter() - t2
    runtime.close()
    return {
        "seconds": seconds,
        **{k: v for k, v in result.counters().items() if k != "errors"},
        "cpu_seconds": round(cpu, 1),
        "again": {
            "seconds": round(again_seconds, 3),
            "rows_per_s": round(ROWS / again_seconds),
            "updated": again.updated,
            "imported": again.imported,
            "cpu_seconds": round(cpu_again - cpu, 1),
        },
        "changed": {
            "seconds": round(changed_seconds, 3),
            "rows_per_s": round(ROWS / changed_seconds),
            "updated": changed.updated,
            "imported": changed.imported,
            "cpu_seconds": round(_cpu_seconds() - cpu_again, 1),
        },
    }


def _changed_copy(path: Path) -> Path:
    """The file with every data row's member level (the last column) changed."""
    out = path.with_name(f"changed-{path.name}")
    with (
        path.open(encoding="utf-8", newline="") as src,
        out.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows([*row[:-1], row[-1] + "+"] for row in reader)
    return out


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the import's readers), which a
    busy shared machine does not inflate as it does wall time."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _child_pandas(url: str, path: str) -> dict[str, Any]:
    import pandas as pd
    import phonenumbers
    import sqlalchemy as sa

    t0 = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)

    def e164(text: str) -> str | None:
        try:
            parsed = phonenumbers.parse(text.lstrip("'"), "CN")
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(parsed):
            return None
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    frame["phone"] = frame["手机号"].map(e164)
    frame = frame.dropna(subset=["phone"]).drop_duplicates(subset=["phone"], keep="last")
    engine = sa.create_engine(url)
    frame.to_sql("contacts_pandas", engine, index=False, chunksize=10_000)
    engine.dispose()
    return {"seconds": time.perf_counter() - t0, "stored": len(frame)}


class _MemoryWatch:
    """The largest sum of memory of this process and its children, and the largest child's,
    sampled every 50 ms. Each process counts its proportional set size (PSS: a page shared by n
    processes counts 1/n in each), so the sum is what the tree holds: a child just forked to
    start a reader shares all of the writer's pages until it execs, and resident sizes summed
    counted the writer twice there (a SQLite run read 520 MB so, against some 400 MB used)."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.rss_peak_kb = 0
        self.child_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _sizes_kb(pid: int) -> tuple[int, int]:
        """The process's PSS and resident size (PSS = resident where the kernel has no
        smaps_rollup); zeros for one gone meanwhile."""
        sizes = {"Pss:": 0, "Rss:": 0}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key = line.split(":", 1)[0] + ":"
                    if key in sizes:
                        sizes[key] = int(line.split()[1])
        except FileNotFoundError:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            sizes["Pss:"] = sizes["Rss:"] = int(line.split()[1])
            except OSError:
                pass
        except OSError:
            pass
        return sizes["Pss:"], sizes["Rss:"]

    @staticmethod
    def _children(me: int) -> set[int]:
        out: set[int] = set()
        # a child is listed under the thread that made it
        for task in Path(f"/proc/{me}/task").iterdir():
            try:
                out.update(int(p) for p in (task / "children").read_text().split())
            except OSError:
                continue
        return out

    def _watch(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.05):
            children = [self._sizes_kb(p) for p in self._children(me)]
            pss, rss = self._sizes_kb(me)
            self.peak_kb = max(self.peak_kb, pss + sum(c[0] for c in children))
            self.rss_peak_kb = max(self.rss_peak_kb, rss + sum(c[1] for c in children))
            self.child_peak_kb = max(self.child_peak_kb, *(c[0] for c in children), 0)


def _child(kind: str, url: str, path: str) -> None:
    with _MemoryWatch() as watch:
        out = _child_hongyan(url, path) if kind == "hongyan" else _child_pandas(url, path)
    me = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_mb"] = round(me.ru_maxrss / 1024, 1)
    out["reader_peak_mb"] = round(watch.child_peak_kb / 1024, 1)
    out["total_peak_mb"] = round(watch.peak_kb / 1024, 1)
    out["total_peak_rss_mb"] = round(watch.rss_peak_kb / 1024, 1)
    out.setdefault("cpu_seconds", round(_cpu_seconds(), 1))
    print(json.dumps(out))


def _spawn(
    kind: str, url: str, path: Path, module: str = "bench.wl_contacts_import"
) -> dict[str, Any]:
    """``module``'s ``--child kind url path`` in a process of its own; its last line's JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", kind, url, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} on {url.split(':')[0]} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- anchors ---------------------------------------------------------------------------------------


def _sqlite_import(path: Path, db: Path) -> tuple[float, str]:
    shell = shutil.which("sqlite3")
    t0 = time.perf_counter()
    if shell:
        subprocess.run(
            [shell, str(db)],
            input=f".mode csv\n.import {path} contacts_raw\n",
            text=True,
            check=True,
        )
        return time.perf_counter() - t0, "sqlite3 .import"
    import sqlite3

    con = sqlite3.connect(db)
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols = ", ".join(f'"{h}"' for h in header)
        con.execute(f"CREATE TABLE contacts_raw ({cols})")
        marks = ", ".join("?" for _ in header)
        con.executemany(f"INSERT INTO contacts_raw VALUES ({marks})", reader)  # noqa: S608
    con.commit()
    con.close()
    return time.perf_counter() - t0, "python sqlite3 executemany"


def _pg_copy(url: str, path: Path) -> float:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        con.execute(
            "CREATE TABLE contacts_raw (phone text, name text, gender text, birthday text, "
            "city text, tags text, level text)"
        )
        t0 = time.perf_counter()
        with (
            con.cursor() as cur,
            cur.copy("COPY contacts_raw FROM STDIN (FORMAT csv, HEADER true)") as copy,
            path.open("rb") as fh,
        ):
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        con.commit()
        return time.perf_counter() - t0


def _pg_database() -> tuple[str, Any] | None:
    import sqlalchemy as sa

    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception:
        admin.dispose()
        return None
    return PG_URL, admin


def _fresh_pg(admin: Any) -> str:
    import sqlalchemy as sa

    name = f"hongyan_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return str(sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False))


def _drop_pg(admin: Any, url: str) -> None:
    import sqlalchemy as sa

    name = sa.engine.make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"rows": ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        path = tmpdir / "contacts.csv"
        t0 = time.perf_counter()
        generate(path, ROWS)
        out["file_mb"] = round(path.stat().st_size / 1e6, 1)
        out["generate_seconds"] = round(time.perf_counter() - t0, 2)

        anchor, how = _sqlite_import(path, tmpdir / "anchor.db")
        ours = _spawn("hongyan", f"sqlite:///{tmpdir / 'ours.db'}", path)
        out["sqlite"] = {
            "anchor": how,
            "anchor_rows_per_s": round(ROWS / anchor),
            "import_rows_per_s": round(ROWS / ours["seconds"]),
            "ratio_to_anchor": round(ours["seconds"] / anchor, 2),
            **ours,
        }
        try:
            pandas = _spawn("pandas", f"sqlite:///{tmpdir / 'pandas.db'}", path)
            out["pandas_phonenumbers_to_sql"] = {
                "rows_per_s": round(ROWS / pandas["seconds"]),
                "ours_speedup": round(pandas["seconds"] / ours["seconds"], 2),
                **pandas,
            }
        except RuntimeError as exc:
            out["pandas_phonenumbers_to_sql"] = {"skipped": str(exc)[-300:]}

        pg = _pg_database()
        if pg is None:
            out["postgresql"] = {"skipped": f"no server at {PG_URL}"}
        else:
            _base, admin = pg
            anchor_url = _fresh_pg(admin)
            ours_url = _fresh_pg(admin)
            try:
                copy_s = _pg_copy(anchor_url, path)
                ours = _spawn("hongyan", ours_url, path)
                out["postgresql"] = {
                    "anchor": "COPY FROM STDIN (FORMAT csv)",
                    "anchor_rows_per_s": round(ROWS / copy_s),
                    "import_rows_per_s": round(ROWS / ours["seconds"]),
                    "ratio_to_anchor": round(ours["seconds"] / copy_s, 2),
                    **ours,
                }
            finally:
                _drop_pg(admin, anchor_url)
                _drop_pg(admin, ours_url)
                admin.dispose()
    out["goal"] = "≥100,000 rows/s, within 3× of the bulk load, peak memory < 500 MB"
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(json.dumps(run(), ensure_ascii=False, indent=2))
