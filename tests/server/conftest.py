# pytest fixtures for the `herd serve` suite (run: python3 -m pytest -q tests/server from the repo
# root, or `ctest -L server`). HERD_BIN names the binary (default build/bin/herd), HERD_SHARED_DIR
# the shared/ test material (default ../shared).
#
# Servers are shared per module (startup is the slow part); a test that needs special options asks
# `make_server` for its own, which is stopped when the test ends. Every server and worker is killed
# in teardown, and a server found dead at teardown fails the test that used it.
import importlib.util
import os

import pytest

REQUIRED = {"openai": "openai", "requests": "requests", "prometheus_client": "prometheus-client"}
_missing = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
if _missing:
    raise pytest.UsageError("the herd serve tests need the Python packages " + ", ".join(_missing) +
                            ": python3 -m pip install " + " ".join(_missing))


def pytest_configure(config):
    from utils import herd_bin
    if not os.access(herd_bin(), os.X_OK):
        raise pytest.UsageError(f"no herd binary at {herd_bin()} (build it, or set HERD_BIN)")


from utils import (ServerProcess, WorkerProcess, finish_server as _finish, require_file,  # noqa: E402
                   smollm2_path, stories260k_path)

SMOLLM2_HINT = "scripts/fetch-model.sh downloads it into models/"
SHARED_HINT = "shared/ must sit beside the repo, or set HERD_SHARED_DIR"


@pytest.fixture(scope="module")
def server():
    """stories260K (no chat template: chatml), 4 slots, 1 thread."""
    require_file(stories260k_path(), SHARED_HINT)
    s = ServerProcess(stories260k_path(), ["--parallel", "4", "-t", "1"]).start()
    yield s
    _finish(s)


@pytest.fixture(scope="module")
def smol_server():
    """SmolLM2-135M-Instruct in one process, 2 slots, 1 thread: slow enough to hold a slot busy."""
    require_file(smollm2_path(), SMOLLM2_HINT)
    s = ServerProcess(smollm2_path(), ["--parallel", "2", "-t", "1", "-c", "2048"]).start()
    yield s
    _finish(s)


@pytest.fixture(scope="session")
def cluster_server():
    """SmolLM2-135M-Instruct on two local `herd worker` processes (1 thread each), 4 slots."""
    require_file(smollm2_path(), SMOLLM2_HINT)
    workers = []
    try:
        workers = [WorkerProcess(threads=1), WorkerProcess(threads=1)]
        s = ServerProcess(smollm2_path(), ["--parallel", "4", "-c", "2048", "--plan-strategy", "even"],
                          workers=workers).start(timeout_s=120)
    except BaseException:
        for w in workers:
            w.stop()
        raise
    yield s
    _finish(s)


@pytest.fixture
def make_server():
    """make_server(model=stories260K, args=[...], api_key=None, env=None) -> a started ServerProcess."""
    started = []

    def make(model=None, args=None, api_key=None, env=None, timeout_s=60.0):
        model = model or stories260k_path()
        require_file(model, SHARED_HINT)
        s = ServerProcess(model, args or ["-t", "1"], api_key=api_key, env=env)
        started.append(s)
        return s.start(timeout_s)

    yield make
    for s in started:
        _finish(s)
