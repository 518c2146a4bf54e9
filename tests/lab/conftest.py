# Shared by the lab tests: the herd binary, the lab script (loaded as a module), a tiny model.
import importlib.machinery
import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_SCRIPT = os.path.join(ROOT, "launch", "herd-lab")
HERD = os.environ.get("HERD_BIN", os.path.join(ROOT, "build", "bin", "herd"))
SHARED = os.environ.get("HERD_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
TINY_MODEL = os.path.join(SHARED, "models", "stories260K.gguf")


def load_lab():
    loader = importlib.machinery.SourceFileLoader("herd_lab", LAB_SCRIPT)
    spec = importlib.util.spec_from_loader("herd_lab", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def lab():
    return load_lab()


def netns_unavailable_reason():
    """Why network namespaces cannot be used here ("" when they can): the namespaced tests skip with it."""
    if os.geteuid() != 0:
        return "not root: network namespaces and tc need root"
    name = f"herdlab-{os.getpid()}-check"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    except FileNotFoundError:
        return "`ip` is not installed (Debian: iproute2)"
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


def leftovers(pid):
    """Everything of lab process `pid` still on the machine: namespaces, cgroups, processes, temp dirs."""
    tag = f"herdlab-{pid}-"
    left = []
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    left += [f"netns {l.split()[0]}" for l in r.stdout.splitlines() if l.startswith(tag)]
    r = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True)
    left += [f"link {l}" for l in r.stdout.splitlines() if tag in l]
    for ctl in ("cpu", "memory"):
        d = f"/sys/fs/cgroup/{ctl}"
        if os.path.isdir(d):
            left += [f"cgroup {d}/{n}" for n in os.listdir(d) if n.startswith(tag)]
    # processes: the workers, benches and probes all carry the lab's key path (in its temp dir) or
    # --exit-with-parent PID on their command line
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == pid:
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag in cmd or f"--exit-with-parent {pid}" in cmd:
            left.append(f"process {p}: {cmd}")
    import tempfile
    left += [f"tmp {n}" for n in os.listdir(tempfile.gettempdir()) if n.startswith(tag)]
    return left
