"""Redirects per second with click recording: ``hongyan redirector`` on loopback, measured with
``wrk``, every click written to PostgreSQL (group commit: a redirect is answered once its click
is committed).

Anchors in the same run, same wrk settings: the same server's ``/healthz`` (the framework's
ceiling: uvicorn + our ASGI app, no database) and a static redirect from nginx (``return 302``).
The clicks stored are counted in the database before and after, so "recorded clicks/s" is what
reached the database, not what wrk saw. 100,000 links are issued first; wrk requests random
codes among them (a Lua script), with a phone's user agent. Goal: ≥ 5,000 recorded clicks/s and
at least half the health endpoint's rate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LINKS = 100_000
DURATION = int(os.environ.get("BENCH_REDIRECT_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_REDIRECT_CONNECTIONS", "256"))
WORKERS = int(os.environ.get("BENCH_REDIRECT_WORKERS", "1"))
THREADS = 1  # two cores: one for wrk, one for the server (and the database shares them)

LUA = """
local codes = {}
for line in io.lines("%(codes)s") do codes[#codes + 1] = line end
math.randomseed(7)
wrk.headers["User-Agent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4) Mobile MicroMessenger/8.0"
request = function()
  return wrk.format("GET", "/" .. codes[math.random(#codes)])
end
"""

NGINX = """
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(dir)s; proxy_temp_path %(dir)s; fastcgi_temp_path %(dir)s;
  uwsgi_temp_path %(dir)s; scgi_temp_path %(dir)s;
  server { listen 127.0.0.1:%(port)d; location / { return 302 https://shop.example/; } }
}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.2)


def wrk(url: str, script: str | None = None) -> dict[str, Any]:
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "requests_per_s": round(rps),
        "requests": total,
        "non_2xx_3xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
        "p99_latency": p99.group(1) if p99 else None,
    }


def _clicks(runtime: Any) -> int:
    import sqlalchemy as sa

    from hongyan.db.scope import unscoped
    from hongyan.db.tables import clicks

    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                unscoped(sa.select(sa.func.count()).select_from(clicks), "bench count")
            ).scalar_one()
        )


def run() -> dict[str, Any]:
    from bench.wl_audience import _runtime
    from bench.wl_contacts_import import PG_URL, _drop_pg, _fresh_pg, _pg_database
    from hongyan.tenants import service as tenants
    from hongyan.tracking import links

    out: dict[str, Any] = {
        "links": LINKS,
        "duration_s": DURATION,
        "connections": CONNECTIONS,
        "wrk_threads": THREADS,
        "redirector_workers": WORKERS,
        "cores": os.cpu_count(),
    }
    if shutil.which("wrk") is None:
        return {**out, "skipped": "wrk is not installed"}
    found = _pg_database()
    if found is None:
        return {**out, "skipped": f"no PostgreSQL at {PG_URL}"}
    _base, admin = found
    url = _fresh_pg(admin)
    runtime = _runtime(url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with runtime.engine.begin() as conn:
            tid = tenants.create_tenant(conn, runtime.clock, slug="bench", name="bench").id
            urls = links.issue(
                conn,
                tid,
                target="https://shop.example/landing?utm_source=sms",
                contact_ids=list(range(1, LINKS + 1)),
                now=runtime.clock.now(),
                expires_at=None,
                campaign_id=1,
                variant="A",
            )
        with tempfile.TemporaryDirectory() as tmp:
            codes = Path(tmp) / "codes.txt"
            codes.write_text("\n".join(u.rsplit("/", 1)[1] for u in urls) + "\n")
            script = Path(tmp) / "codes.lua"
            script.write_text(LUA % {"codes": codes})
            s = runtime.settings
            env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
            env.update(
                HONGYAN_DATABASE_URL=url,
                HONGYAN_VAR_DIR=str(Path(tmp) / "var"),
                HONGYAN_DATA_KEYS=s.data_keys,
                HONGYAN_ACTIVE_KEY=s.active_key,
                HONGYAN_INDEX_KEY=s.index_key,
                HONGYAN_SESSION_SECRET=s.session_secret,
                HONGYAN_ENV="test",
            )
            port = _free_port()
            redirector = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hongyan.cli",
                    "redirector",
                    "--port",
                    str(port),
                    "--workers",
                    str(WORKERS),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(redirector)
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/healthz", redirector)
            # warm the link cache and the connection pool (not measured)
            subprocess.run(
                ["wrk", "-t1", "-c16", "-d2s", "-s", str(script), base],
                capture_output=True,
                check=True,
            )
            before = _clicks(runtime)
            t0 = time.perf_counter()
            out["redirect"] = wrk(base, str(script))
            elapsed = time.perf_counter() - t0
            recorded = _clicks(runtime) - before
            out["redirect"]["clicks_recorded"] = recorded
            out["redirect"]["recorded_clicks_per_s"] = round(recorded / DURATION)
            out["redirect"]["wall_s"] = round(elapsed, 1)
            out["health"] = wrk(f"{base}/healthz")

            if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
                nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
                nport = _free_port()
                conf = Path(tmp) / "nginx.conf"
                conf.write_text(NGINX % {"dir": tmp, "port": nport})
                nginx = subprocess.Popen(
                    [nginx_bin, "-c", str(conf), "-p", tmp],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs.append(nginx)
                _wait(f"http://127.0.0.1:{nport}/x", nginx)
                out["nginx_static_redirect"] = wrk(f"http://127.0.0.1:{nport}", str(script))
            else:
                out["nginx_static_redirect"] = {"skipped": "nginx is not installed"}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        runtime.close()
        _drop_pg(admin, url)
        admin.dispose()
    rec = out["redirect"]["recorded_clicks_per_s"]
    health = out["health"]["requests_per_s"]
    out["ratio_recorded_vs_health"] = round(rec / health, 2)
    ng = out["nginx_static_redirect"].get("requests_per_s")
    if ng:
        out["ratio_recorded_vs_nginx"] = round(rec / ng, 3)
    out["goal"] = ">= 5,000 recorded clicks/s and >= 0.5 of the health endpoint's rate"
    out["goal_met"] = rec >= 5000 and rec / health >= 0.5
    return out


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False, indent=2))
