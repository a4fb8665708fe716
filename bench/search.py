#!/usr/bin/env python3
"""Tool-search benchmark against a running metamcp, through its public REST API.

    python bench/search.py quality --url http://127.0.0.1:8000 [--data ../shared/toolsearch]
    python bench/search.py latency --url http://127.0.0.1:8000 [--tools 10000]

quality: registers the MetaTool tools (199) as hand-registered tools
(POST /api/v1/tools/import), waits until every tool has its vector
(GET /api/v1/health/detailed), runs every dev query through
GET /api/v1/tools/search for each search_type, and prints Recall@1, Recall@5
and nDCG@10 (binary relevance, ideal DCG over min(|relevant|, k)), plus the
same on the LiveMCPBench dev queries (in a second gateway: pass --livemcpbench).
With --dump FILE it also writes each query's keyword and semantic scores of
every tool (max_results=100 twice), for tuning the hybrid fusion offline on
the dev split.

latency: registers N tools generated from both corpora (MetaTool and
LiveMCPBench, each copy with its own name and a varied description), times
how long the gateway takes to embed them, then measures p50/p99 of
GET /api/v1/tools/search per search_type at concurrency 1 and 8. Every
request uses a query not sent before (dev queries, in order), so neither
the answer cache nor the query-embedding cache helps.

Needs only the Python standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import http.client
import os
import urllib.parse

KINDS = ["keyword", "semantic", "hybrid"]

# Credentials sent with every request (set by authenticate()).
AUTH: dict[str, str] = {}


class Response:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


class Client:
    """One keep-alive HTTP/1.1 connection (the standard library's)."""

    def __init__(self, base_url: str, timeout: float = 60):
        u = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, params=None) -> Response:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        headers = dict(AUTH)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        return Response(r.status, r.read())

    def get(self, path: str, params=None) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, json=None) -> Response:  # noqa: A002 - httpx-like
        return self.request("POST", path, body=json)


def authenticate(base_url: str, username: str, password: str) -> None:
    """Logs in and creates an API key for the run: access tokens expire
    during a long quality run, keys do not."""
    c = Client(base_url)
    r = c.post("/api/v1/auth/login", json={"username": username, "password": password})
    if r.status_code != 200:
        sys.exit(f"login failed: HTTP {r.status_code} {r.text[:300]}")
    AUTH["Authorization"] = f"Bearer {r.json()['access_token']}"
    r = c.post("/api/v1/auth/keys", json={"name": f"bench-search-{os.getpid()}", "expires_in_days": 1})
    if r.status_code != 201:
        sys.exit(f"API key not created: HTTP {r.status_code} {r.text[:300]}")
    AUTH["Authorization"] = f"Bearer {r.json()['key']}"


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def safe_name(name: str) -> str:
    """Tool names allow A-Z a-z 0-9 _ - . only (one MetaTool name has '&')."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def register(client: Client, tools: list[dict], batch: int = 500) -> None:
    for i in range(0, len(tools), batch):
        r = client.post("/api/v1/tools/import", json={"tools": tools[i : i + batch]})
        if r.status_code != 201:
            sys.exit(f"import failed: HTTP {r.status_code} {r.text[:500]}")


def wait_embedded(client: Client, n: int, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        search = client.get("/api/v1/health/detailed").json().get("search", {})
        if search.get("state") in ("off", "unavailable"):
            print(f"note: embedder {search.get('state')}: {search.get('error', '')}", file=sys.stderr)
            return search
        if search.get("state") == "ready" and search.get("pending_tools") == 0 and search.get("embedded_tools", 0) >= n:
            return search
        if time.monotonic() > deadline:
            sys.exit(f"embeddings not ready: {search}")
        time.sleep(0.5)


# The gateway takes queries of up to 4,000 characters (the model reads the
# first 256 tokens anyway); a few LiveMCPBench tasks are longer and are cut.
MAX_QUERY = 4000


def search(client: Client, q: str, kind: str, k: int) -> tuple[list[str], dict]:
    q = q[:MAX_QUERY]
    r = client.get("/api/v1/tools/search", params={"q": q, "search_type": kind, "max_results": k})
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    body = r.json()
    return [hit["tool"]["name"] for hit in body["results"]], body


def metrics(ranked: list[str], relevant: set[str]) -> tuple[float, float, float]:
    r1 = len(relevant & set(ranked[:1])) / len(relevant)
    r5 = len(relevant & set(ranked[:5])) / len(relevant)
    dcg = sum(1 / math.log2(i + 2) for i, name in enumerate(ranked[:10]) if name in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return r1, r5, dcg / idcg


def quality(args: argparse.Namespace) -> None:
    data = Path(args.data)
    livemcp = args.livemcpbench
    if livemcp:
        tools = load_jsonl(data / "livemcpbench" / "tools.jsonl")
        queries = load_jsonl(data / "livemcpbench" / "queries.dev.jsonl")
        # Several servers share tool names: the public name is server-qualified,
        # and "any copy counts" (relevant_names, matched on the tool's name).
        payload = [
            {
                "name": safe_name(f"{t['server_key']}__{t['name']}"),
                "description": t["description"],
                "category": t["category"],
                "tags": [t["server_key"]],
            }
            for t in tools
        ]
        name_of = {safe_name(f"{t['server_key']}__{t['name']}"): t["name"] for t in tools}
        relevant_of = lambda q: set(q["relevant_names"])  # noqa: E731
        to_label = lambda n: name_of.get(n, n)  # noqa: E731
    else:
        tools = load_jsonl(data / "tools.jsonl")
        queries = load_jsonl(data / "queries.dev.jsonl")
        payload = [{"name": safe_name(t["name"]), "description": t["description"]} for t in tools]
        label = {safe_name(t["name"]): t["id"] for t in tools}
        relevant_of = lambda q: set(q["relevant"])  # noqa: E731
        to_label = lambda n: label.get(n, n)  # noqa: E731
    if args.limit and args.limit < len(queries):
        # An even spread: the files are grouped by tool, so a prefix is not
        # a fair sample.
        step = len(queries) / args.limit
        queries = [queries[int(i * step)] for i in range(args.limit)]
    client = Client(base_url=args.url, timeout=60)
    register(client, payload)
    started = time.monotonic()
    status = wait_embedded(client, len(payload))
    print(f"registered {len(payload)} tools; embedded in {time.monotonic() - started:.1f}s ({status.get('state')})", file=sys.stderr)
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    print(f"{'search_type':<10} {'n':>6} {'R@1':>7} {'R@5':>7} {'nDCG@10':>8}  (used)")
    for kind in args.kinds.split(","):
        sums = [0.0, 0.0, 0.0]
        used = set()
        t0 = time.monotonic()
        for q in queries:
            ranked, body = search(client, q["query"], kind, 10)
            used.add(body["used"])
            m = metrics([to_label(n) for n in ranked], relevant_of(q))
            sums = [a + b for a, b in zip(sums, m)]
        n = len(queries)
        print(
            f"{kind:<10} {n:>6} {100 * sums[0] / n:>7.2f} {100 * sums[1] / n:>7.2f} {100 * sums[2] / n:>8.2f}  ({','.join(sorted(used))}; {time.monotonic() - t0:.0f}s)",
            flush=True,
        )
    if dump:
        for q in queries:
            row = {"id": q["id"], "relevant": sorted(relevant_of(q))}
            for kind in ("keyword", "semantic"):
                _, body = search(client, q["query"], kind, 100)
                row[kind] = {to_label(h["tool"]["name"]): h["score"] for h in body["results"]}
            dump.write(json.dumps(row) + "\n")
        dump.close()


VARIATIONS = [
    "{d}",
    "{d} (mirror)",
    "Variant: {d}",
    "{d} For teams.",
    "{d} Regional edition.",
    "Beta. {d}",
    "{d} Enterprise plan.",
    "{d} Community build.",
    "Legacy: {d}",
    "{d} Lite.",
    "{d} Pro version.",
    "Fork of a popular tool. {d}",
    "{d} Self-hosted.",
    "{d} With caching.",
]


def generate(data: Path, n: int) -> list[dict]:
    base = [(safe_name(t["name"]), t["description"]) for t in load_jsonl(data / "tools.jsonl")]
    base += [(safe_name(t["name"]), t["description"]) for t in load_jsonl(data / "livemcpbench" / "tools.jsonl")]
    out = []
    i = 0
    while len(out) < n:
        name, desc = base[i % len(base)]
        copy = i // len(base)
        out.append({"name": f"{name}_{i}", "description": VARIATIONS[copy % len(VARIATIONS)].format(d=desc) + (f" #{copy}" if copy >= len(VARIATIONS) else "")})
        i += 1
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def latency(args: argparse.Namespace) -> None:
    data = Path(args.data)
    client = Client(base_url=args.url, timeout=60)
    tools = generate(data, args.tools)
    if args.pid:
        print(f"RSS before registering: {rss_kb(args.pid) / 1024:.0f} MiB", file=sys.stderr)
    t0 = time.monotonic()
    register(client, tools)
    print(f"registered {len(tools)} tools in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    t0 = time.monotonic()
    status = wait_embedded(client, len(tools))
    embed_s = time.monotonic() - t0
    print(f"embedded {len(tools)} tools in {embed_s:.1f}s (last pass: {status.get('last_pass')})")
    queries = [q["query"] for q in load_jsonl(data / "queries.dev.jsonl")]
    if args.quiet_cmd:
        # On a shared machine: make it quiet for the timings (e.g. pause
        # other jobs), and let it go on afterwards.
        subprocess.run(args.quiet_cmd, shell=True, check=True)
    try:
        timings(args, client, queries, len(tools))
    finally:
        if args.resume_cmd:
            subprocess.run(args.resume_cmd, shell=True, check=False)


def timings(args: argparse.Namespace, client: Client, queries: list[str], n_tools: int) -> None:
    print(f"load average at the start of the timings: {os.getloadavg()[0]:.2f}")
    # Build the indexes once (first search after a catalog change) so the
    # timings are of searching, not of indexing.
    t0 = time.monotonic()
    search(client, "warm up the keyword index", "keyword", 10)
    print(f"keyword index build (first search): {1000 * (time.monotonic() - t0):.0f} ms")
    t0 = time.monotonic()
    search(client, "warm up the vector matrix", "semantic", 10)
    print(f"first semantic search (matrix build + query): {1000 * (time.monotonic() - t0):.0f} ms")
    if args.pid:
        print(f"RSS with {n_tools} tools, indexes built: {rss_kb(args.pid) / 1024:.0f} MiB")
    cursor = [0]
    lock = threading.Lock()

    def next_query() -> str:
        with lock:
            q = queries[cursor[0] % len(queries)]
            cursor[0] += 1
            return q

    print(f"{'search_type':<10} {'conc':>4} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for conc, per_thread in ((1, args.requests), (8, args.requests // 4)):
        for kind in KINDS:
            times: list[float] = []

            def worker() -> None:
                c = Client(base_url=args.url, timeout=60)
                c.get("/api/v1/health/live")  # connection set up outside the timing
                for _ in range(per_thread):
                    q = next_query()
                    t = time.perf_counter()
                    search(c, q, kind, 10)
                    dt = time.perf_counter() - t
                    with lock:
                        times.append(dt * 1000)

            threads = [threading.Thread(target=worker) for _ in range(conc)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"{kind:<10} {conc:>4} {len(times):>5} {statistics.median(times):>8.2f} {p99:>8.2f} {statistics.mean(times):>8.2f}", flush=True)
    if args.pid:
        print(f"RSS at the end: {rss_kb(args.pid) / 1024:.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["quality", "latency"])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "toolsearch"))
    p.add_argument("--livemcpbench", action="store_true", help="quality on LiveMCPBench instead of MetaTool")
    p.add_argument("--limit", type=int, default=0, help="only N queries, evenly spread over the file (0: all)")
    p.add_argument("--dump", help="write per-query keyword and semantic scores here (for fusion tuning)")
    p.add_argument("--kinds", default=",".join(KINDS), help="search types to score, comma-separated")
    p.add_argument("--tools", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=500, help="requests per search type at concurrency 1")
    p.add_argument("--pid", type=int, default=0, help="the gateway's pid, to report its RSS")
    p.add_argument("--quiet-cmd", help="latency: a shell command run before the timings (e.g. to pause other work)")
    p.add_argument("--resume-cmd", help="latency: a shell command run after the timings")
    p.add_argument("--username", default="admin")
    p.add_argument("--password-env", default="META_MCP_ADMIN_PASSWORD", help="the environment variable holding the password")
    main_args = p.parse_args()
    password = os.environ.get(main_args.password_env)
    if not password:
        sys.exit(f"set {main_args.password_env} to the password of {main_args.username}")
    authenticate(main_args.url, main_args.username, password)
    if main_args.mode == "quality":
        quality(main_args)
    else:
        latency(main_args)


if __name__ == "__main__":
    main()
