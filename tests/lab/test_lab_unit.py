# herd lab without namespaces: the cluster-file reader, link profiles, the SVG charts, --help, and a
# real loopback run (--no-netns) of two workers. Needs no root; never skipped.
import csv
import json
import os
import re
import select
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import HERD, TINY_MODEL, leftovers


def write(tmp_path, text, name="c.txt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_reads_worker_link_and_coordinator_lines(lab, tmp_path):
    f = write(tmp_path, "# two boxes\n"
              "worker name=desk host=desk.lan port=7000 threads=2 mem=8GB bw=60GB/s ssh=me@desk model=/m.gguf\n"
              "host=127.0.0.1 port=7101 cpu=0.5   # an old herd-cluster line\n"
              "link default latency=0.3ms bw=1Gbit\n"
              "link desk 127.0.0.1:7101 latency=2ms bw=100Mbit\n"
              "coordinator desk\n")
    c = lab.parse_cluster_file(f)
    w = c["workers"]
    assert [x["name"] for x in w] == ["desk", "127.0.0.1:7101"]
    assert w[0]["threads"] == 2 and w[0]["mem"] == 8e9 and w[0]["cpu"] is None
    assert w[1]["cpu"] == 0.5 and w[1]["threads"] == 0
    assert c["links"][1]["bits"] == 100e6 and c["links"][1]["latency"] == pytest.approx(2e-3)
    assert c["coordinator"][0] == "desk"
    # a loopback host is one emulated host per worker; a named host is one for all its workers
    assert lab.emulated_host(w[0]) == "desk.lan" and lab.emulated_host(w[1]) == "127.0.0.1:7101"


@pytest.mark.parametrize("line, says", [
    ("worker host=a port=seven", "c.txt:2: port must be a whole number in 1-65535, got 'seven'"),
    ("worker host=a", "c.txt:2: a worker line needs host= and port="),
    ("worker host=a port=1 cpu=fast", "c.txt:2: cpu= is the CPU quota in cores"),
    ("worker host=a port=1 mem=lots", "c.txt:2: mem: size 'lots'"),
    ("worker host=a port=1 device=cuda", "c.txt:2: device=cuda cannot be emulated"),
    ("device name=gpu mem=24GB bw=900GB/s", "c.txt:2: a `device` line says what a device is"),
    ("link a latency=1ms bw=1Gbit", "c.txt:2: a link line names 'default', 'local' or two hosts"),
    ("link default latency=1ms bw=fast", "c.txt:2: bw: rate 'fast'"),
    ("worker host=a port=1 threads", "c.txt:2: 'threads' is not KEY=VALUE"),
    ("colour blue", "c.txt:2: unknown directive 'colour'"),
])
def test_bad_lines_are_named_by_file_and_line(lab, tmp_path, line, says):
    f = write(tmp_path, "worker host=127.0.0.1 port=7000\n" + line + "\n")
    with pytest.raises(lab.LabError) as e:
        lab.parse_cluster_file(f)
    assert says in str(e.value)


def test_a_file_without_workers_is_an_error(lab, tmp_path):
    with pytest.raises(lab.LabError, match="no worker lines"):
        lab.parse_cluster_file(write(tmp_path, "# nothing\nlink default latency=1ms bw=1Gbit\n"))


def test_link_profiles(lab):
    p = lab.parse_profiles("loopback,1gbe,slow=5Mbit@2ms,fat=12GB/s")
    assert [x["name"] for x in p] == ["loopback", "1gbe", "slow", "fat"]
    assert p[0]["bits"] is None and p[1]["bits"] == 1e9
    assert p[2]["bits"] == 5e6 and p[2]["latency"] == pytest.approx(2e-3)
    assert p[3]["bits"] == 96e9
    with pytest.raises(Exception, match="unknown link profile 'dialup'"):
        lab.parse_profiles("dialup")


def test_tbf_bucket_is_100us_of_the_rate(lab):
    a = lab.tbf_args(1e9)
    assert a[a.index("rate") + 1] == "1000000000bit" and a[a.index("burst") + 1] == "12500"
    b = lab.tbf_args(5e6)  # 62 B in 100 us: one full frame instead
    assert b[b.index("burst") + 1] == "1600"


def test_cpu_quota_uses_a_10ms_period_and_at_least_1ms_of_quota(lab):
    assert lab.cfs_period_quota(0.5) == (10000, 5000)
    assert lab.cfs_period_quota(0.25) == (10000, 2500)
    assert lab.cfs_period_quota(2) == (10000, 20000)
    assert lab.cfs_period_quota(0.05) == (20000, 1000)  # the quota's 1 ms minimum
    assert lab.cfs_period_quota(0.03) == (33334, 1000)  # 0.029999 cores: the kernel counts whole us


def rows(specs):
    out = []
    for n, links, meas, pred in specs:
        out.append({"workers": n, "links": links, "strategy": "even", "tg_tok_s": "" if meas is None else str(meas),
                    "predicted_tok_s": "" if pred is None else str(pred),
                    "error_pct": "" if not (meas and pred) else f"{100 * (pred - meas) / meas:.1f}"})
    return out


def test_charts_are_svg_with_a_mark_per_measurement(lab):
    r = rows([(1, "loopback", 100, 110), (2, "loopback", 150, 140), (1, "wifi", 90, None), (2, "wifi", None, 70)])
    ns = "{http://www.w3.org/2000/svg}"
    a = ET.fromstring(lab.svg_tokps_vs_workers(r))
    assert a.tag == ns + "svg"
    assert len(a.findall(f".//{ns}circle")) == 3  # measured points: the failed run has none
    b = ET.fromstring(lab.svg_predicted_vs_measured(r))
    assert len(b.findall(f".//{ns}circle")) == 2  # only runs with both figures
    assert "2 of 2 runs within 20%" in ET.tostring(b, encoding="unicode")


def test_planner_check_counts_runs_within_20_percent_and_names_the_fastest(lab):
    def row(n, links, strat, meas, pred, split=""):
        return {"workers": str(n), "links": links, "strategy": strat, "tg_tok_s": meas, "predicted_tok_s": pred,
                "split": split}
    rows = [row(1, "wifi", "even", "5.00", "5.90"),   # +18%: within
            row(2, "wifi", "even", "6.00", "7.30"),   # +21.7%: not
            row(2, "wifi", "speed", "6.50", "7.00"),  # the planner's pick and the fastest
            row(3, "wifi", "even", "", "")]           # failed: not counted
    lines = lab.planner_check(rows)
    assert lines[0] == "planner: within 20% of the measurement in 2 of 3 runs (67%)"
    assert "2w-wifi-even" in lines[1] and "7.7% behind the fastest measured, 2w-wifi-speed" in lines[1]
    rows[1]["predicted_tok_s"] = "6.90"
    assert lab.planner_check(rows)[1].startswith("planner: its fastest configuration, 2w-wifi-speed")
    assert "is the fastest measured" in lab.planner_check(rows)[1]
    assert lab.planner_check([rows[3]]) == []
    # Two strategies that gave the same split ran the same configuration: picking either is a hit.
    same = [row(1, "1gbe", "even", "15.09", "13.92", "0-23"), row(1, "1gbe", "speed", "15.27", "13.92", "0-23"),
            row(2, "1gbe", "even", "14.62", "13.85", "0-11,12-23")]
    assert "is the fastest measured (15.27 tok/s, as 1w-1gbe-speed: the same split)" in lab.planner_check(same)[1]
    same[1]["split"] = "0-22"
    assert "behind the fastest measured" in lab.planner_check(same)[1]


def test_help_says_what_is_not_emulated():
    r = subprocess.run([HERD, "lab", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: herd lab FILE" in r.stdout
    assert "NOT emulated" in r.stdout and "latency" in r.stdout


def test_usage_errors_exit_2(tmp_path):
    r = subprocess.run([HERD, "lab"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cluster file is required" in r.stderr
    f = write(tmp_path, "worker host=127.0.0.1 port=7000\n")
    r = subprocess.run([HERD, "lab", f, "--links", "dialup"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown link profile 'dialup'" in r.stderr


def test_bad_cluster_file_is_named(tmp_path):
    f = write(tmp_path, "worker host=127.0.0.1 port=99999\n")
    r = subprocess.run([HERD, "lab", f, "-m", TINY_MODEL, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "c.txt:1: port must be a whole number in 1-65535, got '99999'" in r.stderr


def test_loopback_run_without_namespaces(tmp_path):
    # both workers give the same port: on 127.0.0.1 they get --base-port, --base-port+1
    f = write(tmp_path, "worker name=a host=box1 port=7000 threads=1\nworker name=b host=box2 port=7000 threads=1\n")
    out = tmp_path / "out"
    p = subprocess.Popen([HERD, "lab", f, "-m", TINY_MODEL, "--no-netns", "--workers", "1,2", "-n", "8", "-r", "1",
                          "--base-port", "47870", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    so, se = p.communicate(timeout=600)
    assert p.returncode == 0, se
    assert "not emulated: network namespaces (--no-netns)" in se
    assert "127.0.0.1:47870, 127.0.0.1:47871" in se
    with open(out / "results.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [r["workers"] for r in got] == ["1", "2"]
    for r in got:
        assert r["emulation"] == "loopback" and float(r["tg_tok_s"]) > 0, r
    for svg in ("tokps-vs-workers.svg", "predicted-vs-measured.svg"):
        ET.parse(out / svg)
    assert leftovers(p.pid) == []


def test_a_worker_port_in_use_for_a_moment_is_tried_again(tmp_path):
    # Without namespaces the workers listen on 127.0.0.1 ports in the ephemeral range, which this
    # host's own connections may hold for a moment: a socket holds the port until the lab says it
    # will try again; the worker is started again on the same port and the run completes.
    import socket
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    f = write(tmp_path, f"worker name=a host=127.0.0.1 port={port} threads=1\n")  # (a unique port is kept)
    out = tmp_path / "out"
    p = subprocess.Popen([HERD, "lab", f, "-m", TINY_MODEL, "--no-netns", "--workers", "1", "-n", "4", "-r", "1",
                          "--out", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stderr:  # the lab ends (and stderr closes) within its own start timeout
            lines.append(line)
            if f"127.0.0.1:{port} is in use; trying again in 1 s" in line:
                held.close()
        p.wait(timeout=600)
    finally:
        held.close()
        if p.poll() is None:
            p.kill()
    se = "".join(lines)
    assert p.returncode == 0, se
    assert f"127.0.0.1:{port} is in use; trying again in 1 s" in se
    with open(out / "results.csv") as fh:
        assert [row["workers"] for row in csv.DictReader(fh)] == ["1"]


def test_a_profile_latency_is_added_to_every_hop(tmp_path):
    # No root needed: the latency is herd's --link-delay, given to every worker and the bench. Over
    # 'far' each of a decode step's three hops (coordinator to stage, stage to stage, back to the
    # coordinator) is received at least 30 ms after it was sent, so the step's round trip less its
    # stages' own times is at least 3 x 30 ms. The trace splits that residual over the hops by the
    # links' measured speeds (spread_hop_time), so one hop may show a little under 30 ms while the
    # step's hops add up to at least 90. Over 'loopback' (no latency) the median hop is well under
    # it. The planner is told the same.
    f = write(tmp_path, "worker name=a host=box1 port=7000 threads=1\nworker name=b host=box2 port=7000 threads=1\n")
    out = tmp_path / "out"
    p = subprocess.Popen([HERD, "lab", f, "-m", TINY_MODEL, "--no-netns", "--workers", "2", "--links",
                          "loopback,far=10Gbit@30ms", "-n", "6", "-r", "1", "--base-port", "47880", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    so, se = p.communicate(timeout=600)
    assert p.returncode == 0, se
    assert "latency" not in "".join(l for l in se.splitlines() if "not emulated" in l), se
    hops, steps = {}, {}
    for run in ("loopback", "far"):
        tr = json.loads((out / "logs" / f"trace-2w-{run}-even.json").read_text())
        decode = [e for e in tr if e.get("ph") == "X" and e["name"] == "transfer" and e["args"]["rows"] == 1]
        hops[run] = sorted(e["dur"] / 1e3 for e in decode)
        steps[run] = {}
        for e in decode:
            steps[run].setdefault(e["args"]["batch"], []).append(e["dur"] / 1e3)
        assert hops[run], f"no decode hops in the {run} trace"
    print("decode hops ms", hops)
    assert all(len(h) == 3 for h in steps["far"].values()), steps["far"]
    # The trace prints microseconds with 3 decimals: allow that rounding, 3 x 0.5 ns.
    assert min(sum(h) for h in steps["far"].values()) >= 90.0 - 1.5e-6, steps["far"]
    assert hops["loopback"][len(hops["loopback"]) // 2] < 15.0, hops
    far = (out / "cluster-2w-far.txt").read_text()
    assert re.search(r"^link h1 h2 latency=30\d\d\d\.\d+us", far, re.M), far
    assert re.search(r"^link local latency=30\d\d\d\.\d+us", far, re.M), far
    assert "link local" not in (out / "cluster-2w-loopback.txt").read_text()
    assert leftovers(p.pid) == []


def _grandchild_report(lab, lab_lives):
    """Fork M (the lab); M makes the lab's preexec_fn and forks G, which runs it as a Popen child would.
    With lab_lives, G runs it while M lives, then M ends; without, M ends first (the lab SIGKILLed between
    the fork and the prctl). Returns what G wrote before it ended (G is someone else's child by then)."""
    r, w = os.pipe()
    m = os.fork()
    if m == 0:
        try:
            os.close(r)
            pre, m_pid = lab._die_with_parent(), os.getpid()
            if os.fork() == 0:
                while not lab_lives and os.getppid() == m_pid:
                    time.sleep(0.01)
                pre()
                os.write(w, b"armed ")
                time.sleep(5)  # a working pdeathsig ends this when M ends
                os.write(w, b"survived")
                os._exit(0)
            if lab_lives:
                time.sleep(0.5)  # G has run the preexec
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(m, 0)
    out, deadline = b"", time.monotonic() + 20
    while select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
        chunk = os.read(r, 64)
        if not chunk:
            break  # G has ended
        out += chunk
    else:
        pytest.fail(f"the child still runs after 20 s; it wrote {out!r}")
    os.close(r)
    return out.decode()


def test_a_child_ends_with_the_lab_even_if_the_lab_died_before_its_prctl(lab):
    # The lab is SIGKILLed while Popen forks `herd bench`: the child has not yet asked for a pdeathsig,
    # so none will come; it must notice it has a new parent and end instead of running the bench alone.
    assert _grandchild_report(lab, lab_lives=False) == ""
    # A child armed while the lab lives is SIGKILLed when the lab ends (it never wakes from its sleep).
    assert _grandchild_report(lab, lab_lives=True) == "armed "
