# Helpers for the `herd serve` tests: start the server (and `herd worker` processes) as child
# processes on 127.0.0.1, wait until they are ready, talk to them, and always kill them.
#
# Every child runs in its own session (process group) and gets SIGKILL if the test process dies
# (PR_SET_PDEATHSIG), so an interrupted run leaves no orphans behind.
from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def herd_bin() -> str:
    return os.environ.get("HERD_BIN", str(REPO_ROOT / "build" / "bin" / "herd"))


def shared_dir() -> Path:
    return Path(os.environ.get("HERD_SHARED_DIR", str(REPO_ROOT.parent / "shared")))


def stories260k_path() -> str:
    return str(shared_dir() / "models" / "stories260K.gguf")


def smollm2_path() -> str:
    return str(REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def require_file(path: str, hint: str) -> None:
    if not Path(path).exists():
        raise FileNotFoundError(f"missing test input {path} ({hint})")


# ---- child processes --------------------------------------------------------------------------

_live: set["Child"] = set()


try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: no parent-death signal, teardown and atexit still kill
    _libc = None


def _preexec() -> None:
    os.setsid()
    if _libc is not None:  # die with the test process, whatever kills it
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Child:
    """A process whose stdout/stderr go to a temporary file; killed (whole group) by stop()."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.argv = argv
        self.log = tempfile.NamedTemporaryFile(prefix="herd-serve-test-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=full_env, preexec_fn=_preexec)
        _live.add(self)

    def output(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = rx.search(self.output())
            if m:
                return m
            if not self.alive():
                raise RuntimeError(f"{self.argv[:2]} exited with {self.proc.returncode} before printing "
                                   f"/{pattern}/:\n{self.output()[-4000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.argv[:2]} printed no /{pattern}/ within {timeout_s} s:\n{self.output()[-4000:]}")

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the group, SIGKILL it after grace_s; returns the exit code (None if it had to be killed)."""
        code = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                code = self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.proc.returncode
        try:  # anything left in the group (and the process itself, if it ignored SIGTERM)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _live.discard(self)
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
        return code


@atexit.register
def _kill_all() -> None:
    for c in list(_live):
        c.stop(grace_s=1.0)


class WorkerProcess:
    """`herd worker --listen tcp://127.0.0.1:* -t THREADS`; .address is the HOST:PORT it bound."""

    def __init__(self, threads: int = 1, extra: list[str] | None = None, timeout_s: float = 30.0):
        # --exit-with-parent: a pytest run that dies (a crash, a timeout) leaves no worker behind.
        self.child = Child([herd_bin(), "worker", "--listen", "tcp://127.0.0.1:*", "-t", str(threads),
                            "--exit-with-parent", str(os.getpid()), *(extra or [])])
        m = self.child.wait_for_line(r"listening on (?:tcp://)?(127\.0\.0\.1):(\d+)", timeout_s)
        self.address = f"{m.group(1)}:{m.group(2)}"

    def stop(self) -> None:
        self.child.stop()


class ServerProcess:
    """`herd serve -m MODEL --host 127.0.0.1 --port 0 ARGS...`, started and waited for (/health 200)."""

    def __init__(self, model: str, args: list[str] | None = None, api_key: str | None = None,
                 workers: list[WorkerProcess] | None = None, env: dict[str, str] | None = None,
                 cluster_file: str | None = None):
        """cluster_file: run as `herd-cluster FILE -- serve ...` (its workers, its teardown)."""
        self.model = model
        self.cluster_file = cluster_file
        self.args = list(args or [])
        self.api_key = api_key
        self.workers = workers or []
        self.env = env
        self.child: Child | None = None
        self._clients: list = []
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle --
    def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        argv = [herd_bin(), "serve", "-m", self.model, "--host", "127.0.0.1", "--port", "0", *self.args]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key]
        if self.workers:
            argv += ["--workers", ",".join(w.address for w in self.workers)]
        env = dict(self.env or {})
        if self.cluster_file:
            argv = [str(REPO_ROOT / "launch" / "herd-cluster"), self.cluster_file, "--", *argv[1:]]
            env["HERD"] = herd_bin()
        self.child = Child(argv, env)
        try:
            m = self.child.wait_for_line(r"listening on http://([0-9.]+):(\d+)", timeout_s)
            self.host, self.port = m.group(1), int(m.group(2))
            assert self.port != 0, "the server printed port 0; it must print the port it bound"
            deadline = time.monotonic() + timeout_s
            last = None
            while time.monotonic() < deadline:
                if not self.child.alive():
                    raise RuntimeError(f"herd serve exited with {self.child.proc.returncode} while loading:\n"
                                       f"{self.output()[-4000:]}")
                try:
                    last = requests.get(self.url("/health"), timeout=2)
                    if last.status_code == 200:
                        return self
                except requests.RequestException as e:
                    last = e
                time.sleep(0.05)
            raise TimeoutError(f"/health was not 200 within {timeout_s} s (last: {last!r}):\n{self.output()[-4000:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.child is not None:
            self.child.stop()
        for w in self.workers:
            w.stop()

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def output(self) -> str:
        return self.child.output() if self.child else ""

    # -- requests --
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {}
        if self.api_key is not None:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(extra or {})
        return h

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.get(self.url(path), headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, body: Any = None, **kw) -> requests.Response:
        """POST body as JSON (a dict/list) or as raw bytes/str (anything else)."""
        kw.setdefault("timeout", 120)
        headers = self.headers(kw.pop("headers", None))
        if isinstance(body, (dict, list)):
            return requests.post(self.url(path), json=body, headers=headers, **kw)
        headers.setdefault("Content-Type", "application/json")
        return requests.post(self.url(path), data=body, headers=headers, **kw)

    def openai(self, api_key: str | None = None):
        import openai
        client = openai.OpenAI(base_url=self.url("/v1"), api_key=api_key or self.api_key or "unused",
                               max_retries=0, timeout=120)
        self._clients.append(client)  # closed in stop(): their keep-alive connections go first
        return client

    def stream(self, path: str, body: dict, **kw) -> Iterator[dict]:
        """POSTs body with stream=true and yields each SSE data object; checks the [DONE] ending."""
        body = dict(body, stream=True)
        with self.post(path, body, stream=True, **kw) as r:
            assert r.status_code == 200, f"{r.status_code}: {r.text}"
            assert r.headers.get("Content-Type", "").startswith("text/event-stream"), r.headers
            done = False
            for event in sse_events(r):
                assert not done, f"data after [DONE]: {event!r}"
                if event == "[DONE]":
                    done = True
                    continue
                yield json.loads(event)
            assert done, "the stream ended without data: [DONE]"

    # -- /metrics --
    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        from prometheus_client.parser import text_string_to_metric_families
        r = self.get("/metrics", timeout=10)
        assert r.status_code == 200, f"/metrics {r.status_code}: {r.text}"
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 if there are none)."""
        samples = self.metrics().get(name)
        assert samples is not None, f"/metrics has no {name}"
        return sum(v for l, v in samples if all(l.get(k) == x for k, x in labels.items()))


def finish_server(server: ServerProcess) -> None:
    """Teardown: stops the server (and its workers); fails if it had died on its own before."""
    crashed = server.child is not None and not server.alive()
    code = server.child.proc.returncode if crashed else None
    log = server.output()
    server.stop()
    if crashed:
        import pytest
        pytest.fail(f"herd serve died during the tests (exit {code}):\n{log[-4000:]}")


def sse_events(r: requests.Response) -> Iterator[str]:
    """The `data:` payloads of a text/event-stream response, one per event."""
    data: list[str] = []
    for raw in r.iter_lines(decode_unicode=False):
        line = raw.decode("utf-8")
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield "\n".join(data)


def raw_http(host: str, port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Sends bytes on a fresh socket, returns (status, body) of the reply: read until its
    Content-Length is complete or the server closes (status 0: closed without a reply)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(request)
        resp = b""
        while True:
            if b"\r\n\r\n" in resp:
                head, body = resp.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            resp += b
    status_line = resp.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/") else 0
    body = resp.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in resp else b""
    return status, body


def check_error(r: requests.Response, status: int | tuple[int, ...], etype: str | None = None,
                mentions: str | None = None) -> dict:
    """Asserts an OpenAI-shaped error reply: the status, {"error": {message, type, param, code}}."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, f"expected {statuses}, got {r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], err
    assert "type" in err and "param" in err and "code" in err, f"error object lacks type/param/code: {err}"
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    if etype is not None:
        assert err["type"] == etype, f"expected type {etype}: {err}"
    if mentions is not None:
        assert mentions in (err["param"] or "") or mentions in err["message"], f"the error does not name {mentions}: {err}"
    return err
