#!/usr/bin/env python3
"""Aggregate decode throughput and time to first token of `herd serve` under 1, 2, 4, 8 concurrent
streams, for one model, as a single process (-t 1) and on a cluster of 2 local `herd worker`s
(-t 1 each). Streams are raw HTTP SSE on /v1/completions (one thread, raw sockets and a selector,
so the client costs little CPU beside the server) with a fixed max_tokens; the
tokens are counted from the final usage chunk (stream_options.include_usage), since a stream may
end early at an end-of-text token.

  bench/serve_bench.py --herd build/bin/herd --model M.gguf [--modes single,cluster]
                       [--streams 1,2,4,8] [--max-tokens 64] [--rounds 3] [--json OUT.jsonl]

Per (mode, N): `rounds` rounds of N streams started together; decode tok/s of a round is
sum(tokens_i - 1) / (last stream end - first first-token), the aggregate rate once every stream has
its first token; agg tok/s is sum(tokens_i) / round wall time (prefill included). The table gives the
median round; TTFT p50/p99 are over every stream of every round. Then the ratios the issue targets:
single 4 streams / single 1 stream (>= 2.5) and cluster 8 streams / single 8 streams (>= 1.6).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import selectors
import socket
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))
from utils import ServerProcess, WorkerProcess  # noqa: E402

PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "Here is a long story about a dragon and a knight who became friends:",
    "In the middle of the forest there was a tiny house, and inside it",
    "The recipe for a good day starts early in the morning, when",
    "Long ago, before the mountains had names, a girl named Mara set out to",
    "Scientists have long wondered why the sky is blue. The answer is that",
    "Dear diary, today was the strangest day of my life, because",
]


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Stream:
    """One streamed completion over a raw socket: the client side costs a few syscalls per chunk, so
    on a small machine the measurement is not the Python client's speed (requests + json.loads per
    token in threads took a large share of a core and halved the single-stream rate measured)."""

    def __init__(self, host: str, port: int, path: str, body: dict, headers: dict):
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        self.sock = socket.create_connection((host, port), timeout=600)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.start = self.first = self.end = None
        self.tokens = 0
        self.error = None

    def send(self):
        self.start = time.perf_counter()
        self.sock.setblocking(True)
        self.sock.sendall(self.request)
        self.sock.setblocking(False)

    def on_readable(self) -> bool:
        """Reads what arrived; False once the server closed the connection."""
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return True
        if data:
            if self.first is None and b"data: {" in data:
                self.first = time.perf_counter()  # the first event of a completion stream is its first text
            self.buf += data
            return True
        self.end = time.perf_counter()
        self.sock.close()
        self.finish()
        return False

    def finish(self):
        head, _, body = bytes(self.buf).partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        if status != [b"200"]:
            self.error = f"{status} {body[:200]!r}"
            return
        # Chunked transfer coding: the SSE events sit in the chunks' data.
        events, text = [], b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            text += rest[:n]
            body = rest[n + 2:]
        for line in text.split(b"\n"):
            if line.startswith(b"data: {"):
                events.append(json.loads(line[6:]))
        usage = [e["usage"] for e in events if e.get("usage")]
        if self.first is None:
            self.error = "no text in the stream"
        elif not usage:
            self.error = "no usage chunk"
        else:
            self.tokens = usage[-1]["completion_tokens"]


def run_round(server: ServerProcess, n: int, max_tokens: int, seed0: int) -> list[dict]:
    url = urllib.parse.urlsplit(server.url("/v1/completions"))
    streams = [Stream(url.hostname, url.port, url.path,
                      {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0.8,
                       "seed": seed0 + i, "stream": True, "stream_options": {"include_usage": True}},
                      server.headers()) for i in range(n)]
    sel = selectors.DefaultSelector()
    for st in streams:  # all connected first, then every request sent at once
        st.send()
        sel.register(st.sock, selectors.EVENT_READ, st)
    open_ = n
    while open_:
        for key, _ in sel.select(timeout=600):
            if not key.data.on_readable():
                sel.unregister(key.fileobj)
                open_ -= 1
    return [{"start": st.start, "first": st.first, "end": st.end, "tokens": st.tokens, "error": st.error}
            for st in streams]


def bench_server(server: ServerProcess, label: str, streams: list[int], max_tokens: int, rounds: int) -> list[dict]:
    rows = []
    run_round(server, 1, 8, 999)  # warm-up: page in the weights, first-request setup
    for n in streams:
        per_round, ttfts, short = [], [], 0
        for r in range(rounds):
            outs = run_round(server, n, max_tokens, 1000 * r)
            errors = [o["error"] for o in outs if o.get("error")]
            if errors:
                raise RuntimeError(f"{label}, {n} streams: {errors}")
            short += sum(1 for o in outs if o["tokens"] < max_tokens)
            first = min(o["first"] for o in outs)
            end = max(o["end"] for o in outs)
            start = min(o["start"] for o in outs)
            decode = sum(o["tokens"] - 1 for o in outs) / (end - first) if end > first else float("nan")
            agg = sum(o["tokens"] for o in outs) / (end - start)
            per_round.append((decode, agg))
            ttfts += [(o["first"] - o["start"]) * 1000 for o in outs]
        med = sorted(per_round)[len(per_round) // 2]
        row = {"label": label, "streams": n, "decode_tok_s": med[0], "agg_tok_s": med[1],
               "per_stream_tok_s": med[0] / n, "ttft_p50_ms": percentile(ttfts, 50),
               "ttft_p99_ms": percentile(ttfts, 99), "rounds": [d for d, _ in per_round], "short_streams": short}
        rows.append(row)
        print(f"serve_bench: {label:>8} N={n}: decode {med[0]:8.1f} tok/s  agg {med[1]:8.1f} tok/s  "
              f"TTFT p50 {row['ttft_p50_ms']:7.1f} ms p99 {row['ttft_p99_ms']:7.1f} ms"
              + (f"  ({short} streams ended before max_tokens)" if short else ""), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--herd", default=os.environ.get("HERD_BIN", "build/bin/herd"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--modes", default="single,cluster")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", "--ctx", type=int, default=1024, help="server context (-c)")
    ap.add_argument("--cluster-args", default="--plan-strategy even",
                    help="extra serve options on the cluster (e.g. '--split 0-8,9-11')")
    ap.add_argument("--json", help="append the rows as JSON lines to this file")
    a = ap.parse_args()
    os.environ["HERD_BIN"] = a.herd
    streams = [int(x) for x in a.streams.split(",")]
    parallel = str(max(streams))
    model_id = Path(a.model).name.removesuffix(".gguf")
    rows = []
    for mode in a.modes.split(","):
        common = ["--parallel", parallel, "-c", str(a.ctx), "--queue", "64"]
        if mode == "single":
            server = ServerProcess(a.model, ["-t", "1", *common])
        elif mode == "cluster":
            workers = [WorkerProcess(threads=1), WorkerProcess(threads=1)]
            server = ServerProcess(a.model, [*common, *a.cluster_args.split()], workers=workers)
        else:
            ap.error(f"unknown mode {mode}")
        try:
            server.start(timeout_s=300)
            for row in bench_server(server, mode, streams, a.max_tokens, a.rounds):
                rows.append(dict(row, model=model_id))
        finally:
            server.stop()
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    print(f"\n### {model_id}: max_tokens {a.max_tokens}, {a.rounds} rounds per row (median round)\n")
    print("| mode | streams | decode tok/s | agg tok/s | tok/s per stream | TTFT p50 ms | TTFT p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['streams']} | {r['decode_tok_s']:.1f} | {r['agg_tok_s']:.1f} | "
              f"{r['per_stream_tok_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} |")
    by = {(r["label"], r["streams"]): r["decode_tok_s"] for r in rows}
    print()
    if ("single", 4) in by and ("single", 1) in by:
        x = by[("single", 4)] / by[("single", 1)]
        print(f"- single process, 4 streams / 1 stream: {x:.2f}x (target >= 2.5x: {'met' if x >= 2.5 else 'NOT met'})")
    if ("cluster", 8) in by and ("single", 8) in by:
        x = by[("cluster", 8)] / by[("single", 8)]
        print(f"- cluster 8 streams / single process 8 streams: {x:.2f}x "
              f"(target >= 1.6x: {'met' if x >= 1.6 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
