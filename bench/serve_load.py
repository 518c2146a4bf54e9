#!/usr/bin/env python3
"""Load run against `herd serve` on 127.0.0.1: C concurrent connections (default 64) for D seconds
(default 60), each looping over a mix of requests on its own keep-alive connection:
  60% /v1/completions (max_tokens 8..48), 15% streamed /v1/chat/completions, 10% streams dropped after
  the first chunk, 10% malformed JSON (expects 400), 5% wrong key type (expects 400).
After a 503/429 a connection waits --backoff seconds (the server's Retry-After is 1 s).
Counts ok / deliberate (503 queue full, 429) / expected 4xx / dropped on purpose / failed (anything
else: connection errors, timeouts, unexpected statuses, broken streams), samples the server's RSS
(/proc/PID/status VmRSS) every second and compares the mean of the first 10 s with the last 10 s
(target: within 10%). Afterwards /metrics must show no busy slot and an empty queue.

  bench/serve_load.py --herd build/bin/herd --model M.gguf [-C 64] [-d 60] [--parallel 4] [--queue 32]
  bench/serve_load.py --url http://127.0.0.1:PORT --pid PID ...   (a server started elsewhere)

Exit status 1 when something failed, slots stayed busy, or the RSS grew by more than 10%.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))
from utils import ServerProcess, sse_events  # noqa: E402

PROMPTS = ["Once upon a time", "Write a poem about the sea.", "What is the capital of France?",
           "Tell me a story about a brave mouse.", "Explain why the sky is blue.", "List three colours."]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Load:
    def __init__(self, base: str, headers: dict, deadline: float, seed: int):
        self.base, self.headers, self.deadline = base, headers, deadline
        self.counts: Counter = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.backoff_s = 0.0
        self.tl = threading.local()  # per connection: the request kind, whether the last one got a 503

    def count(self, what: str, detail: str | None = None) -> None:
        with self.lock:
            self.counts[what] += 1
            if detail and len(self.failures) < 20:
                self.failures.append(detail)

    def classify(self, r: requests.Response, expect: int = 200) -> str | None:
        if r.status_code in (503, 429):
            self.tl.backoff = True
            return "deliberate"
        if r.status_code != expect:
            self.count("failed", f"{self.tl.kind}: expected {expect}, got {r.status_code}: {r.text[:200]}")
            return None
        return "ok" if expect == 200 else "expected_4xx"

    def connection(self, i: int) -> None:
        rng = random.Random(i)
        self.tl.kind, self.tl.backoff = "", False
        s = requests.Session()
        s.headers.update(self.headers)
        while time.monotonic() < self.deadline:
            x = rng.random()
            if self.backoff_s and self.tl.backoff:  # a 503 says "Retry-After": wait a little, as clients do
                time.sleep(rng.uniform(0.5, 1.5) * self.backoff_s)
            self.tl.backoff = False
            try:
                if x < 0.60:
                    self.tl.kind = "completion"
                    body = {"prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(8, 48),
                            "temperature": 0.8, "seed": rng.randint(0, 1 << 30)}
                    r = s.post(self.base + "/v1/completions", json=body, timeout=300)
                    what = self.classify(r)
                    if what == "ok":
                        u = r.json()["usage"]
                        if u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
                            self.count("failed", f"usage does not add up: {u}")
                            continue
                    if what:
                        self.count(what)
                elif x < 0.75:
                    self.tl.kind = "chat-stream"
                    body = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "stream": True,
                            "max_tokens": rng.randint(8, 32)}
                    with s.post(self.base + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
                        what = self.classify(r)
                        if what == "ok":
                            events = list(sse_events(r))
                            if not events or events[-1] != "[DONE]":
                                self.count("failed", f"stream without [DONE]: {events[-2:]}")
                                continue
                            for e in events[:-1]:
                                json.loads(e)
                        if what:
                            self.count(what)
                elif x < 0.85:
                    self.tl.kind = "dropped-stream"
                    body = {"prompt": rng.choice(PROMPTS), "max_tokens": 400, "stream": True}
                    r = s.post(self.base + "/v1/completions", json=body, stream=True, timeout=300)
                    what = self.classify(r)
                    if what == "ok":
                        next(l for l in r.iter_lines() if l)
                        r.close()  # drop the connection mid-stream
                        self.count("dropped")
                    else:
                        r.close()
                        if what:
                            self.count(what)
                elif x < 0.95:
                    self.tl.kind = "malformed-json"
                    r = s.post(self.base + "/v1/completions", data=b'{"prompt": "a", "max_tokens": ',
                               headers={"Content-Type": "application/json"}, timeout=60)
                    what = self.classify(r, 400)
                    if what:
                        self.count(what)
                else:
                    self.tl.kind = "wrong-type"
                    r = s.post(self.base + "/v1/chat/completions", json={"messages": "not a list"}, timeout=60)
                    what = self.classify(r, 400)
                    if what:
                        self.count(what)
            except (requests.RequestException, ValueError, StopIteration) as e:
                self.count("failed", f"{self.tl.kind}: {e!r}"[:300])
                s.close()
                s = requests.Session()
                s.headers.update(self.headers)
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--herd", default=os.environ.get("HERD_BIN", "build/bin/herd"))
    ap.add_argument("--model", help="start `herd serve -m MODEL` (else --url and --pid)")
    ap.add_argument("--url")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--api-key")
    ap.add_argument("-C", "--connections", type=int, default=64)
    ap.add_argument("-d", "--duration", type=float, default=60)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--queue", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-c", "--ctx", type=int, default=2048)
    ap.add_argument("--window", type=float, default=10, help="seconds averaged at the start and at the end")
    ap.add_argument("--backoff", type=float, default=1.0,
                    help="seconds (x0.5..1.5) a connection waits after a 503/429 (0 = retry at once)")
    a = ap.parse_args()

    server = None
    if a.model:
        os.environ["HERD_BIN"] = a.herd
        server = ServerProcess(a.model, ["-t", str(a.threads), "--parallel", str(a.parallel), "--queue",
                                         str(a.queue), "-c", str(a.ctx)], api_key=a.api_key).start(300)
        base, pid = server.base_url, server.child.proc.pid
    elif a.url and a.pid:
        base, pid = a.url.rstrip("/"), a.pid
    else:
        ap.error("give --model, or --url and --pid")
    if not base.startswith(("http://127.0.0.1", "http://localhost")):
        ap.error("the load run only targets 127.0.0.1")
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}

    try:
        t0 = time.monotonic()
        load = Load(base, headers, t0 + a.duration, 1)
        load.backoff_s = a.backoff
        threads = [threading.Thread(target=load.connection, args=(i,), daemon=True) for i in range(a.connections)]
        for t in threads:
            t.start()
        samples: list[tuple[float, int]] = []
        while time.monotonic() < t0 + a.duration:
            kib = rss_kib(pid)
            if kib is None:
                print(f"serve_load: the server (pid {pid}) is gone", file=sys.stderr)
                break
            samples.append((time.monotonic() - t0, kib))
            with load.lock:
                c = dict(load.counts)
            print(f"serve_load: {samples[-1][0]:5.0f} s  RSS {kib / 1024:7.1f} MiB  {c}", file=sys.stderr, flush=True)
            time.sleep(1.0)
        for t in threads:
            t.join(timeout=320)
        stuck = sum(t.is_alive() for t in threads)
        elapsed = time.monotonic() - t0
        # the server settles: no busy slot, nothing queued
        idle = False
        for _ in range(50):
            try:
                m = requests.get(base + "/metrics", headers=headers, timeout=5).text
                vals = {l.split()[0]: float(l.split()[-1]) for l in m.splitlines()
                        if l.startswith(("herd_slots_busy", "herd_queue_length"))}
                if vals.get("herd_slots_busy") == 0 and vals.get("herd_queue_length") == 0:
                    idle = True
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        alive = rss_kib(pid) is not None
    finally:
        if server:
            server.stop()

    first = [k for s, k in samples if s < a.window]
    last = [k for s, k in samples if s >= samples[-1][0] - a.window] if samples else []
    f_mean = statistics.mean(first) / 1024 if first else float("nan")
    l_mean = statistics.mean(last) / 1024 if last else float("nan")
    ratio = l_mean / f_mean if first and last else float("nan")
    c = load.counts
    total = sum(c.values())
    print(f"\n### serve load: {a.connections} connections, {elapsed:.0f} s, {base}\n")
    print("| ok | deliberate 503/429 | expected 4xx | dropped on purpose | failed | requests/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {c['ok']} | {c['deliberate']} | {c['expected_4xx']} | {c['dropped']} | {c['failed']} | "
          f"{total / elapsed:.1f} |")
    print(f"\nRSS mean first {a.window:.0f} s {f_mean:.1f} MiB, last {a.window:.0f} s {l_mean:.1f} MiB: "
          f"ratio {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
          f"peak {max((k for _, k in samples), default=0) / 1024:.1f} MiB")
    print(f"server alive at the end: {alive}; idle afterwards (no busy slot, empty queue): {idle}; "
          f"client threads stuck: {stuck}")
    for f in load.failures:
        print(f"  failure: {f}")
    ok = c["failed"] == 0 and ratio <= 1.10 and idle and alive and stuck == 0 and c["ok"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
