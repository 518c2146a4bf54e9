# The server on a cluster of `herd worker`s when a worker dies: with --on-worker-loss fail the
# request in flight gets a 500 server_error (or an error event in its stream), and the server
# process itself stays up; with the default, replan, the request completes with the same text.
import signal
import threading
import time

import pytest
import requests

from utils import ServerProcess, WorkerProcess, check_error, finish_server, require_file, stories260k_path


def start_slow_cluster(extra_args: list[str]) -> ServerProcess:
    require_file(stories260k_path(), "shared/ must sit beside the repo")
    workers = []
    try:
        workers = [WorkerProcess(extra=["--debug-delay-ms", "20"]) for _ in range(2)]
        return ServerProcess(stories260k_path(), ["--parallel", "2", "--plan-strategy", "even"] + extra_args,
                             workers=workers).start()
    except BaseException:
        for w in workers:
            w.stop()
        raise


@pytest.fixture
def slow_cluster():
    s = start_slow_cluster(["--on-worker-loss", "fail"])
    yield s
    finish_server(s)


def test_worker_killed_mid_request_is_replanned_by_default():
    s = start_slow_cluster([])
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}
        ref = requests.post(s.url("/v1/completions"), json=body, timeout=60)
        assert ref.status_code == 200, ref.text[:500]
        out = {}
        t = threading.Thread(target=lambda: out.update(r=requests.post(s.url("/v1/completions"), json=body, timeout=60)))
        t.start()
        deadline = time.monotonic() + 10
        while s.metric("herd_slots_busy") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        s.workers[1].child.proc.send_signal(signal.SIGKILL)
        t.join(30)
        assert not t.is_alive(), "the request still hangs 30 s after its worker died"
        assert out["r"].status_code == 200, out["r"].text[:500]
        assert out["r"].json()["choices"][0]["text"] == ref.json()["choices"][0]["text"]
    finally:
        finish_server(s)


def test_worker_killed_mid_request_500(slow_cluster):
    s = slow_cluster
    out = {}

    def long_request():
        t0 = time.monotonic()
        out["r"] = requests.post(s.url("/v1/completions"), json={"prompt": "Once upon a time", "max_tokens": 400},
                                 timeout=60)
        out["t"] = time.monotonic() - t0

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.monotonic() + 10
    while s.metric("herd_slots_busy") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    s.workers[1].child.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    t.join(30)
    assert not t.is_alive(), "the request still hangs 30 s after its worker died"
    check_error(out["r"], 500, "server_error")
    assert time.monotonic() - killed_at < 10
    assert s.alive(), "herd serve died with its worker"
    assert requests.get(s.url("/health"), timeout=5).status_code in (200, 503)
    deadline = time.monotonic() + 3
    while s.metric("herd_slots_busy") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.metric("herd_slots_busy") == 0, "the failed request still holds its slot"


def test_worker_killed_mid_stream(slow_cluster):
    s = slow_cluster
    with requests.post(s.url("/v1/completions"), json={"prompt": "Once upon a time", "max_tokens": 400,
                                                       "stream": True}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(l for l in lines if l).startswith(b"data: {")
        s.workers[0].child.proc.send_signal(signal.SIGKILL)
        rest = [l for l in lines if l]  # the stream must end, not hang (timeout=30 per read)
    assert rest, "the stream ended without a word"
    # the stream ends with an error object (OpenAI's {"error": ...} event) and/or [DONE], not silently
    assert any(b'"error"' in l for l in rest), f"no error event at the end of the stream: {rest[-3:]}"
    assert s.alive()
