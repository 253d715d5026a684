"""How the HTTP server holds up (issue 12 item 10): malformed bodies, concurrent load, a small request beside
a 900-document one, slow or half-sent requests, and memory after one long document.

    .venv/bin/python benchmarks/bench_reliability.py [--before REV] [--real-shape FOLDER] \
        [--results benchmarks/RESULTS.md]
    .venv/bin/python benchmarks/bench_reliability.py --only bounded   # malformed bodies, largest request

`--only bounded` runs one largest request the default limits allow (a body near the 8 MiB cap, its documents
cut to the per-text byte cap, as many as the per-request byte cap takes) while small requests are sent, and
reports the small ones' p50/p99 latency. Every run reports its counts: HTTP requests sent, 5xx answers,
tracebacks in the servers' logs, and files lost (or changed) in the artifact folder it served.

Each case runs against the real server (`python -m rerank_export serve`, a subprocess on 127.0.0.1) over the
tiny random-weight model, built offline and passed through the parity gate as the tests do (serve refuses
unverified artifacts). The fairness, slow-request and memory cases run twice: on this tree and on the tree
of `--before` (the server before fair turns, read deadlines and malloc_trim), extracted with `git archive`.
`--real-shape` adds the memory case on a real-shape artifact (e.g. benchmarks/out/artifacts/baseline-bf16),
served with --allow-unverified: its weights are random, so only its memory counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
from realshape import FIXTURE, OUT, ROOT, write_section

if TYPE_CHECKING:
    from typing_extensions import Self

BEFORE = "b097d8f"  # the last commit whose server had no fair turns, read deadlines or malloc_trim
WORK = OUT / "reliability"
QUERY = "What is the capital of France?"
MIB = 2**20
PROSE = "Paris is the capital of France, and the Seine runs through it past the Louvre. "
TALLY = {"sent": 0, "5xx": 0, "tracebacks": 0}  # over every server and case of one run
_TALLY_LOCK = threading.Lock()


def tally(status: int) -> int:
    """Count one HTTP request sent and whether it got a 5xx (0: no answer)."""
    with _TALLY_LOCK:
        TALLY["sent"] += 1
        TALLY["5xx"] += status >= 500
    return status


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) and its sha256: what 'files lost' compares."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def tiny_artifacts(root: Path = WORK / "artifacts") -> Path:
    """baseline-fp32 of the tiny model, through the parity gate (as tests/conftest.py's verified_artifacts)."""
    if (root / "baseline-fp32" / "manifest.json").is_file():
        return root
    from rerank_export.evalsets import builtin_eval_set
    from rerank_export.export import export_formats
    from rerank_export.parity import check_artifacts
    from rerank_export.reference import SourceModel
    from rerank_export.tiny import build_tiny

    model = build_tiny(WORK / "tiny", tokenizer_dir=FIXTURE, seed=0)
    source = SourceModel(str(model))
    export_formats(source.model_id, None, root, ["baseline-fp32"], source=source)
    if not check_artifacts(root, source, [builtin_eval_set(False).limit(2)], names=["baseline-fp32"])[0].passed:
        raise SystemExit(f"the tiny baseline-fp32 in {root} failed its parity gate")
    return root


def before_tree(repo: Path, rev: str, into: Path) -> Path:
    """The package as it was at `rev` (git archive), to serve the 'before' figures from."""
    data = subprocess.run(["git", "-C", str(repo), "archive", rev, "rerank_export"], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m rerank_export serve` from `tree` on a free port; its RSS from psutil."""

    def __init__(self, tree: Path, artifacts: Path, flags: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "rerank_export", "serve", str(artifacts), "--device", "cpu",
                        "--port", str(self.port), "--quiet", *flags]
        env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__, after its tracebacks are counted)
        self.proc = subprocess.Popen(self.command, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log, stdin=subprocess.DEVNULL)

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.__exit__()
        raise SystemExit(f"the server did not start: {' '.join(self.command)}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        TALLY["tracebacks"] += self.log.read().count(b"Traceback (most recent call last)")
        self.log.close()

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=30).status_code == 200
        except httpx.TransportError:
            return False


def rerank(base: str, documents: list[str], timeout: float = 3600) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        r = httpx.post(f"{base}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=timeout)
    except httpx.TransportError:
        tally(0)
        raise
    return tally(r.status_code), time.perf_counter() - start


def fuzz(server: Server) -> dict:
    """The seeded malformed-body corpus of tests/e2e/test_serve_fuzz.py: status classes seen."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.test_serve_fuzz import corpus

    classes: dict[str, int] = {}
    with httpx.Client(base_url=server.base, timeout=60, headers={"Content-Type": "application/json"}) as client:
        for route, body in corpus():
            status = tally(client.post(route, content=body).status_code)
            classes[f"{status // 100}xx"] = classes.get(f"{status // 100}xx", 0) + 1
    return {"cases": sum(classes.values()), "classes": dict(sorted(classes.items())), "alive": server.alive()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load(server: Server, clients: int, requests: int) -> dict:
    """`clients` threads, each sending `requests` rerank requests of 4 short documents one after another."""
    docs = ["Paris is the capital of France.", "Berlin is in Germany.", "Bananas are yellow.", "Rome is old."]
    rss_before = server.rss()

    def client(_: int) -> list[tuple[int, float]]:
        out = []
        for _ in range(requests):
            try:
                out.append(rerank(server.base, docs, timeout=120))
            except httpx.TransportError:
                out.append((0, 0.0))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rows in pool.map(client, range(clients)) for r in rows]
    wall = time.perf_counter() - start
    latencies = [t for status, t in results if status == 200]
    return {"clients": clients, "requests": requests, "errors": sum(s != 200 for s, _ in results),
            "p50_ms": 1000 * percentile(latencies, 0.5), "p99_ms": 1000 * percentile(latencies, 0.99),
            "requests_per_s": len(results) / wall, "rss_before_mib": rss_before / MIB,
            "rss_after_mib": server.rss() / MIB, "alive": server.alive()}


def fairness(server: Server, docs: int, chars: int) -> dict:
    """One-document latency alone, then while one `docs`-document request runs (probes one after another)."""
    alone = [rerank(server.base, ["Paris is the capital of France."])[1] for _ in range(5)]
    big: dict = {}
    body = [(f"document {i} " + "Paris has museums and bridges. " * chars)[:chars] for i in range(docs)]

    def run_big() -> None:
        big["status"], big["s"] = rerank(server.base, body)

    thread = threading.Thread(target=run_big)
    thread.start()
    time.sleep(2.0)  # the body is sent and being scored
    probes = []
    while thread.is_alive():
        status, seconds = rerank(server.base, ["Paris is the capital of France."])
        probes.append(seconds if status == 200 else float("nan"))
    thread.join()
    return {"docs": docs, "doc_chars": chars, "alone_median_s": statistics.median(alone),
            "big_status": big.get("status"), "big_s": big.get("s"), "probes": len(probes),
            "first_probe_s": probes[0] if probes else None,
            "probe_median_s": statistics.median(probes) if probes else None,
            "probe_max_s": max(probes) if probes else None}


def largest_allowed(max_length: int, max_request_tokens: int = 131072, max_body: int = 8 * MIB) -> list[str]:
    """The largest request the limits allow: as many documents as the per-request byte cap takes once each is
    cut to the per-text cap, each as long as the body cap allows (so every one is cut)."""
    from rerank_export.serve import BYTES_PER_TOKEN, text_cap

    cap = text_cap(max_length)
    count = max_request_tokens * BYTES_PER_TOKEN // (cap + len(QUERY))
    size = (max_body - 64 * 1024) // count  # room for the JSON around them
    return [(f"document {i} " + PROSE * (size // len(PROSE) + 1))[:size] for i in range(count)]


def bounded(server: Server, max_length: int, clients: int = 2) -> dict:
    """Small requests (one short document, `clients` senders one after another) while the largest allowed
    request runs: their p50/p99 latency, and the large one's status and time."""
    alone = [rerank(server.base, ["Paris is the capital of France."])[1] for _ in range(5)]
    body, big = largest_allowed(max_length), {}

    def run_big() -> None:
        big["status"], big["s"] = rerank(server.base, body)

    def small(_: int) -> list[float]:
        out = []
        while thread.is_alive():
            status, seconds = rerank(server.base, ["Paris is the capital of France."], timeout=120)
            out.append(seconds if status == 200 else float("inf"))
        return out

    thread = threading.Thread(target=run_big)
    thread.start()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for rows in pool.map(small, range(clients)) for t in rows]
    thread.join()
    return {"docs": len(body), "doc_bytes": len(body[0]), "body_mib": sum(map(len, body)) / MIB,
            "alone_median_s": statistics.median(alone), "big_status": big.get("status"), "big_s": big.get("s"),
            "small": len(latencies), "small_failed": sum(t == float("inf") for t in latencies),
            "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies)}


HALF_SENT = {"nothing": b"", "partial headers": b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty",
             "half a body": b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n{\"query\": "}


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (whatever it said first)."""
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True


def slowloris(server: Server, per_kind: int, window: float) -> dict:
    """`per_kind` connections of each half-sent kind; how many the server closed within `window` seconds."""
    socks = {kind: [] for kind in HALF_SENT}
    for kind, data in HALF_SENT.items():
        for _ in range(per_kind):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(data)
            sock.setblocking(False)
            socks[kind].append(sock)
    time.sleep(window)
    result = {kind: sum(closed(s) for s in group) for kind, group in socks.items()}
    alive = server.alive()  # while the unclosed ones are still open
    for group in socks.values():
        for s in group:
            s.close()
    return {"per_kind": per_kind, "window_s": window, "closed": result, "alive": alive}


def memory(server: Server, words: int, settle: float = 3.0) -> dict:
    """RSS before, just after, and `settle` seconds after one document of `words` words (cut at max length)."""
    before = server.rss()
    status, seconds = rerank(server.base, [" ".join(["Paris"] * words)])
    after = server.rss()
    time.sleep(settle)
    return {"status": status, "seconds": seconds, "rss_before_mib": before / MIB, "rss_after_mib": after / MIB,
            "rss_settled_mib": server.rss() / MIB}


def peak_rss(server: Server) -> int:
    """The server's peak RSS so far (VmHWM)."""
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def memory_case(tree: Path, artifacts: Path, flags: list[str], words: int) -> dict:
    with Server(tree, artifacts, flags) as server:
        rerank(server.base, ["warm-up"])
        row = memory(server, words)
        return {**row, "peak_mib": peak_rss(server) / MIB}


def run_variant(tree: Path, artifacts: Path, flags: list[str], args: argparse.Namespace, full: bool) -> dict:
    """Every case on one tree: fuzz and load only on this tree (`full`), the rest on both."""
    row: dict = {}
    if full:
        with Server(tree, artifacts, flags) as server:
            row["fuzz"] = fuzz(server)
            row["load"] = load(server, args.clients, args.requests)
    with Server(tree, artifacts, flags) as server:
        row["slowloris"] = slowloris(server, args.slow_connections, args.slow_window)
    with Server(tree, artifacts, flags) as server:
        row["fairness"] = fairness(server, args.docs, args.doc_chars)
    row["memory"] = memory_case(tree, artifacts, flags, args.long_words)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default=BEFORE, help=f"git revision of the 'before' server (default {BEFORE})")
    p.add_argument("--repo", type=Path, default=ROOT, help="the git checkout to take --before from")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--docs", type=int, default=900, help="documents of the large request (fairness)")
    p.add_argument("--doc-chars", type=int, default=2000, help="characters per document of the large request")
    p.add_argument("--slow-connections", type=int, default=10, help="half-sent connections of each kind")
    p.add_argument("--read-timeout", type=float, default=2.0, help="the server's --read-timeout here")
    p.add_argument("--slow-window", type=float, default=10.0, help="seconds to wait for them to be closed")
    p.add_argument("--long-words", type=int, default=9000, help="words of the long document (cut at 8192 tokens)")
    p.add_argument("--real-shape", type=Path, default=None, help="also the memory case on this artifact folder")
    p.add_argument("--real-words", type=int, default=2200, help="words of the real-shape long document")
    p.add_argument("--results", type=Path, default=None, help="write the section into this RESULTS.md")
    p.add_argument("--from-json", type=Path, default=None, help="with --results: the section from a saved run")
    p.add_argument("--only", choices=["bounded"], default=None,
                   help="run only the malformed bodies and the largest-allowed-request case, print their JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from rerank_export.host import describe_cpu

    args = parse_args(argv)
    if args.from_json:  # only rewrite the section from an earlier run's figures
        write_section(args.results, "bench_reliability", section(json.loads(args.from_json.read_text())))
        return 0
    artifacts = tiny_artifacts()
    files = snapshot(artifacts)
    if args.only == "bounded":
        with Server(ROOT, artifacts, ["--max-length", "8192"]) as server:
            row = {"fuzz": fuzz(server)}
        row["bounded"] = bounded_case(artifacts)
        print(json.dumps({**row, "counts": counts(artifacts, files)}, indent=2))
        return 0
    common = ["--max-length", "8192", "--max-request-tokens", "4000000"]
    rows = {"cpu": describe_cpu(), "date": date.today().isoformat(), "command": " ".join(sys.argv),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    rows["after"] = run_variant(ROOT, artifacts, [*common, "--read-timeout", str(args.read_timeout)], args, True)
    rows["after"]["bounded"] = bounded_case(artifacts)
    print(json.dumps(rows["after"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        old = before_tree(args.repo, args.before, Path(tmp))
        rows["before"] = run_variant(old, artifacts, common, args, False)
        print(json.dumps(rows["before"]), flush=True)
        if args.real_shape:
            flags = ["--max-length", "8192", "--allow-unverified"]
            rows["real_shape"] = {"folder": str(args.real_shape), "words": args.real_words,
                                  "after": memory_case(ROOT, args.real_shape, flags, args.real_words),
                                  "before": memory_case(old, args.real_shape, flags, args.real_words)}
            print(json.dumps(rows["real_shape"]), flush=True)
    rows["counts"] = counts(artifacts, files)
    (WORK / "reliability.json").write_text(json.dumps(rows, indent=2))
    if args.results:
        write_section(args.results, "bench_reliability", section(rows))
    return 0


def bounded_case(artifacts: Path, max_length: int = 8192) -> dict:
    """bounded() on this tree under the default limits (only --max-length set)."""
    with Server(ROOT, artifacts, ["--max-length", str(max_length)]) as server:
        return {**bounded(server, max_length), "alive": server.alive()}


def counts(artifacts: Path, files: dict[str, str]) -> dict:
    """The run's counts; files lost are the artifact folder's files gone or changed since the run began."""
    after = snapshot(artifacts)
    return {**TALLY, "files_lost": sum(after.get(name) != digest for name, digest in files.items())}


COMMAND = ("python benchmarks/bench_reliability.py --real-shape benchmarks/out/artifacts/baseline-bf16 "
           "--results benchmarks/RESULTS.md")


def _slow_line(row: dict) -> str:
    closed = row["slowloris"]["closed"]
    return ", ".join(f"{kind} {n}/{row['slowloris']['per_kind']}" for kind, n in closed.items())


def _fair_cells(row: dict) -> str:
    f = row["fairness"]
    return (f"{1000 * f['alone_median_s']:.0f} ms | {f['probes']} | {1000 * f['probe_median_s']:.0f} ms | "
            f"{1000 * f['probe_max_s']:.0f} ms | {f['big_s']:.1f} s")


def _memory_cells(m: dict) -> str:
    return (f"{m['rss_before_mib']:,.0f} | {m['peak_mib']:,.0f} | {m['rss_after_mib']:,.0f} | "
            f"{m['rss_after_mib'] - m['rss_before_mib']:+,.0f} | {m['seconds']:.1f} s")


def section(rows: dict) -> str:
    """The RESULTS.md section: what was tried, the load held, the faults survived, before and after."""
    a, b, args = rows["after"], rows["before"], rows["args"]
    fuzz, load_row = a["fuzz"], a["load"]
    lines = [f"## Reliability of the HTTP server (tiny random-weight model, baseline-fp32), {rows['date']}", "",
             f"Command: `{COMMAND}`", "",
             (f"Machine: {rows['cpu']}, 2 cores shared with other engineers' jobs (indicative numbers). Every "
             f"case ran against `python -m rerank_export serve` in its own process on 127.0.0.1 (`--max-length "
             f"8192 --max-request-tokens 4000000`, and `--read-timeout {args['read_timeout']:g}` on this tree). "
             f"'Before' is the server of commit {args['before']} (chunks of 16 pairs under the Reranker's lock, "
             "no read deadline, no malloc_trim), served from a `git archive` of that commit."), "",
             (f"- Malformed bodies: the {fuzz['cases']} seeded cases of tests/e2e/test_serve_fuzz.py, status classes "
             f"{', '.join(f'{k} {v}' for k, v in fuzz['classes'].items())}; no 5xx; serving afterwards: "
             f"{'yes' if fuzz['alive'] else 'NO'}."),
             (f"- Load: {load_row['clients']} clients x {load_row['requests']} requests (4 short documents each), "
             f"p50 {load_row['p50_ms']:.0f} ms, p99 {load_row['p99_ms']:.0f} ms, {load_row['requests_per_s']:.1f} "
             f"requests/s, {load_row['errors']} errors; RSS {load_row['rss_before_mib']:,.0f} MiB before, "
             f"{load_row['rss_after_mib']:,.0f} MiB after."),
             (f"- Slow or half-sent requests ({args['slow_connections']} connections each: nothing sent, partial "
             f"headers, headers and half a body), closed by the server within {args['slow_window']:g} s: "
             f"before {_slow_line(b)}; after {_slow_line(a)} (a 408 where a request had begun). The server "
             f"answered /health meanwhile in both."), "",
             (f"A one-document request alone, and repeated while one request of {args['docs']} documents of "
             f"{args['doc_chars']:,} characters (~450 tokens each) ran:"), "",
             "| server | alone (median) | probes during the large one | probe median | probe max | large request |",
             "|---|---|---|---|---|---|",
             f"| before | {_fair_cells(b)} |", f"| after | {_fair_cells(a)} |", "",
             "Memory after one long document (RSS of the server process, MiB, after a one-document warm-up):", "",
             "| model | server | before the request | peak | after | change | request |", "|---|---|---|---|---|---|---|",
             f"| tiny, 8,192 tokens | before | {_memory_cells(b['memory'])} |",
             f"| tiny, 8,192 tokens | after | {_memory_cells(a['memory'])} |"]
    lines += _bounded_lines(a.get("bounded"), rows.get("counts"))
    real = rows.get("real_shape")
    if real:
        lines += [f"| 0.6B shape bf16, {real['words']:,} words | before | {_memory_cells(real['before'])} |",
                  f"| 0.6B shape bf16, {real['words']:,} words | after | {_memory_cells(real['after'])} |"]
    lines += ["", *([rows["note"], ""] if rows.get("note") else []), ORIGINAL]
    return "\n".join(lines) + "\n"


def _bounded_lines(b: dict | None, counts: dict | None) -> list[str]:
    lines = []
    if b:
        lines += ["", (f"The largest request the default limits allow ({b['docs']} documents of {b['doc_bytes']:,} bytes, "
                       f"{b['body_mib']:.1f} MiB, each cut to 131,072 bytes before tokenizing; `--max-length 8192`) "
                       f"took {b['big_s']:.1f} s (status {b['big_status']}); {b['small']} one-document requests sent "
                       f"meanwhile by 2 clients: p50 {b['p50_s']:.2f} s, p99 {b['p99_s']:.2f} s, max "
                       f"{b['max_s']:.2f} s, {b['small_failed']} failed (alone: {b['alone_median_s']:.2f} s).")]
    if counts:
        lines += ["", (f"Counts of the run: {counts['sent']:,} HTTP requests sent, {counts['5xx']} 5xx, "
                       f"{counts['tracebacks']} tracebacks in the servers' logs, {counts['files_lost']} files lost "
                       "or changed in the artifact folder served.")]
    return lines


ORIGINAL = ("The issue's own figures came from the server before it scored in chunks (before commit d3feafc): 900 "
            "documents of ~9 KB took 163 s and the next one-document request waited 208 s; one 8,192-token "
            "document on onnx-int8 raised RSS from 0.78 to 6.3 GB for good; half-sent bodies and partial headers "
            "stayed open past 60 s.")


if __name__ == "__main__":
    raise SystemExit(main())
