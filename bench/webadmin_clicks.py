"""An administrator clicking through a big domain's Accounts page, each request's latency kept.

    python bench/webadmin_clicks.py run --port P --user U --password PW --domain D \\
        --out FILE.csv [--rate 4] [--requests N | --stop-file F] [--ready-file F]
    python bench/webadmin_clicks.py report FILE.csv [FILE.csv ...]
    python bench/webadmin_clicks.py verdict UNDER_LOAD.csv SMTP.csv [--target-ms 300] [--max-drop 0.05]

For bench/webadmin-latency.sh. ``run`` logs in like a browser (GET /login for the CSRF token,
POST the form, keep the session cookie) over one HTTPS keep-alive connection (a browser keeps
its connection too; a TLS handshake per click would measure TLS), then repeats a realistic
round of clicks on /admin/domains/D/accounts at a fixed rate (--rate requests/s, each due at
start + n/rate: a slow answer is followed at once by the next due one, so slow pages do not
thin out their own sample; one request at a time, as one administrator's browser sends):

    first       the first page
    next        the following page, three times (its rel="next" link: keyset ``after=``)
    jump        a page in the middle of the domain (``after=`` a name halfway down)
    search      a last name (1/24 of the domain matches), then its next page (search-next)
    search      a first and last name (a few hundred match)
    search      a name nobody has (the whole domain is looked at, none found)
    search      a prefix of account names (``user0999``: ten match)

Each request's latency (first byte sent to the whole body read) goes to --out as CSV rows
``kind,ms,status``. A status other than 200 is counted as an error and reported. It stops
after --requests requests or once --stop-file exists; --ready-file is created once logged in.

``report`` prints, per file (one case: alone, under SMTP load), the count, errors and
p50/p95/p99/max latency over all requests and per kind; ``verdict`` says whether issue #16's
two targets are met (p99 under SMTP load, SMTP delivered rate with/without the page traffic).
"""

from __future__ import annotations

import argparse
import csv
import html
import http.client
import math
import os
import re
import ssl
import statistics
import sys
import time
import urllib.parse
from typing import Optional

CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')
NEXT_RE = re.compile(r'<a href="([^"]*)" rel="next">')
SEARCHES = [
    ("search", "novak"),
    ("search", "ida keller"),
    ("search", "zzqx"),
    ("search", "user0999"),
]


class Browser:
    """One keep-alive HTTPS connection with cookies, reopened if the server closes it."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.cookies: dict[str, str] = {}
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE  # the server's generated self-signed certificate
        self.conn: Optional[http.client.HTTPSConnection] = None

    def request(
        self, method: str, path: str, form: Optional[dict[str, str]] = None
    ) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=60, context=self.ctx
                )
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                text = r.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        for cookie in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return r.status, text

    def login(self, user: str, password: str) -> None:
        status, page = self.request("GET", "/login")
        m = CSRF_RE.search(page)
        if status != 200 or not m:
            sys.exit(f"webadmin_clicks: no login form (HTTP {status})")
        form = {"csrf": html.unescape(m.group(1)), "name": user, "password": password, "next": ""}
        status, page = self.request("POST", "/login", form)
        if status not in (200, 302, 303) or not self.cookies:
            sys.exit(f"webadmin_clicks: login as {user} failed (HTTP {status})")


def clicks(domain: str, middle: str) -> list[tuple[str, str]]:
    """One round of (kind, path); "next" and "search-next" follow the previous page's link."""
    base = f"/admin/domains/{urllib.parse.quote(domain)}/accounts"
    round_: list[tuple[str, str]] = [("first", base)] + [("next", "")] * 3
    round_.append(("jump", base + "?after=" + urllib.parse.quote(middle)))
    for kind, words in SEARCHES:
        round_.append((kind, base + "?q=" + urllib.parse.quote(words)))
        if words == "novak":
            round_.append(("search-next", ""))
    return round_


def run(args: argparse.Namespace) -> None:
    b = Browser(args.port)
    b.login(args.user, args.password)
    status, page = b.request("GET", f"/admin/domains/{urllib.parse.quote(args.domain)}/accounts")
    if status != 200:
        sys.exit(f"webadmin_clicks: the accounts page answered HTTP {status}")
    if args.ready_file:
        open(args.ready_file, "w").close()
    plan = clicks(args.domain, args.middle)
    interval = 1.0 / args.rate
    n = 0
    last_next: Optional[str] = None
    start = time.monotonic()
    with open(args.out, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["kind", "ms", "status"])
        while True:
            if args.requests and n >= args.requests:
                break
            if args.stop_file and os.path.exists(args.stop_file):
                break
            kind, path = plan[n % len(plan)]
            if not path:  # follow the link the previous page offered, else start over
                path = last_next or plan[0][1]
            due = start + n * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            t0 = time.perf_counter()
            status, page = b.request("GET", path)
            ms = (time.perf_counter() - t0) * 1000
            m = NEXT_RE.search(page)
            last_next = html.unescape(m.group(1)) if m else None
            out.writerow([kind, f"{ms:.2f}", status])
            f.flush()
            n += 1


def pct(values: list[float], p: float) -> float:
    """The p-th percentile, nearest rank (p99 of 300 samples is the 297th smallest)."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def report(paths: list[str]) -> None:
    print(
        f"{'case':<22} {'kind':<12} {'n':>5} {'err':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for path in paths:
        case = os.path.basename(path).rsplit(".", 1)[0]
        rows = list(csv.DictReader(open(path)))
        kinds = ["all"] + sorted({r["kind"] for r in rows})
        for kind in kinds:
            sel = [r for r in rows if kind == "all" or r["kind"] == kind]
            ms = [float(r["ms"]) for r in sel]
            errors = sum(1 for r in sel if r["status"] != "200")
            if not ms:
                continue
            print(
                f"{case:<22} {kind:<12} {len(ms):>5} {errors:>4} {statistics.median(ms):>8.1f} "
                f"{pct(ms, 95):>8.1f} {pct(ms, 99):>8.1f} {max(ms):>8.1f}"
            )
        if len(rows) < 300:
            print(f"{case}: WARNING: {len(rows)} requests: too few for a p99 (300 or more)")


def verdict(under_load: str, smtp_csv: str, target_ms: float, max_drop: float) -> None:
    """Issue #16's two conditions, each met or not: p99 under SMTP load below ``target_ms``,
    and the median delivered rate with the page traffic at least (1 - ``max_drop``) of the
    median without it."""
    ms = [float(r["ms"]) for r in csv.DictReader(open(under_load))]
    rates: dict[str, list[float]] = {"cgtwist": [], "cgtwist-web": []}
    for row in csv.DictReader(open(smtp_csv)):
        if row["label"] in rates and row["deliver_msg_s"]:
            rates[row["label"]].append(float(row["deliver_msg_s"]))
    p99 = pct(ms, 99) if ms else float("nan")
    print(
        f"p99 under SMTP load: {p99:.1f} ms (target < {target_ms:g} ms): "
        + ("met" if p99 < target_ms else "NOT MET")
    )
    if rates["cgtwist"] and rates["cgtwist-web"]:
        ratio = statistics.median(rates["cgtwist-web"]) / statistics.median(rates["cgtwist"])
        print(
            f"SMTP delivered rate with/without the page traffic: {ratio:.3f} "
            f"(target >= {1 - max_drop:.2f}): " + ("met" if ratio >= 1 - max_drop else "NOT MET")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--domain", required=True)
    r.add_argument("--middle", default="user050000", help="the name the 'jump' click starts after")
    r.add_argument("--out", required=True)
    r.add_argument("--rate", type=float, default=4.0)
    r.add_argument("--requests", type=int, default=0)
    r.add_argument("--stop-file")
    r.add_argument("--ready-file")
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    v = sub.add_parser("verdict")
    v.add_argument("under_load", help="the latencies under SMTP load (CSV of run)")
    v.add_argument("smtp_csv", help="smtp-load.sh's rows, labels cgtwist and cgtwist-web")
    v.add_argument("--target-ms", type=float, default=300.0)
    v.add_argument("--max-drop", type=float, default=0.05)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args)
    elif args.cmd == "report":
        report(args.files)
    else:
        verdict(args.under_load, args.smtp_csv, args.target_ms, args.max_drop)


if __name__ == "__main__":
    main()
