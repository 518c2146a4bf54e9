# The read-only endpoints: /health, /, /v1/models, /v1/cluster, /metrics.
import math
import time


STORIES260K_LAYERS = 5
SMOLLM2_LAYERS = 30


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_page(server):
    r = server.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<html" in r.text.lower()


def test_models_lists_the_model(server):
    r = server.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    m = body["data"][0]
    assert m["id"] == "stories260K"
    assert m["object"] == "model"
    assert m["owned_by"] == "herd"
    assert isinstance(m["created"], int) and m["created"] > 1_600_000_000


def test_models_via_openai_client(server):
    ids = [m.id for m in server.openai().models.list()]
    assert ids == ["stories260K"]


def test_response_names_the_model(server):
    r = server.post("/v1/completions", {"model": "whatever-the-client-says", "prompt": "Once", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "stories260K"


def check_cluster_shape(c: dict, model_id: str, n_layers: int, n_stages: int, parallel: int) -> None:
    types = {"model": str, "ready": bool, "n_ctx": int, "parallel": int, "slots_busy": int, "queue": int,
             "stages": list, "hops_ms": list, "batch_ms": (int, float), "tokens_per_second": list,
             "requests_total": int, "generated_tokens_total": int}
    for k, t in types.items():
        assert k in c, f"/v1/cluster lacks {k}: {c}"
        assert isinstance(c[k], t) and not (t is int and isinstance(c[k], bool)), f"{k}: {c[k]!r} is not {t}"
    assert c["model"] == model_id
    assert c["ready"] is True
    assert c["n_ctx"] > 0
    assert c["parallel"] == parallel
    assert 0 <= c["slots_busy"] <= parallel
    assert c["queue"] >= 0
    assert len(c["tokens_per_second"]) == 60
    assert all(isinstance(x, (int, float)) and x >= 0 for x in c["tokens_per_second"])
    assert len(c["stages"]) == n_stages, c["stages"]
    next_layer = 0
    for s in c["stages"]:
        for k, t in {"name": str, "device": str, "first_layer": int, "end_layer": int, "memory_bytes": int,
                     "compute_ms": (int, float)}.items():
            assert isinstance(s.get(k), t), f"stage {k}: {s.get(k)!r} is not {t} ({s})"
        assert s["first_layer"] == next_layer, f"stages do not tile the layers: {c['stages']}"
        assert s["end_layer"] > s["first_layer"]
        assert s["memory_bytes"] > 0
        assert s["compute_ms"] >= 0 and math.isfinite(s["compute_ms"])
        next_layer = s["end_layer"]
    assert next_layer == n_layers, f"the stages end at layer {next_layer}, the model has {n_layers}"
    # coordinator->stage0, stage i->i+1, last->coordinator; none in-process
    if n_stages == 1 and c["stages"][0]["name"] == "local":
        assert c["hops_ms"] == []
    else:
        assert len(c["hops_ms"]) == n_stages + 1, c["hops_ms"]
        assert all(isinstance(h, (int, float)) and h >= 0 for h in c["hops_ms"])


def test_cluster_json_in_process(server):
    before = server.get("/v1/cluster").json()
    r = server.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4})
    assert r.status_code == 200, r.text
    r = server.get("/v1/cluster")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    c = r.json()
    check_cluster_shape(c, "stories260K", STORIES260K_LAYERS, 1, 4)
    assert c["stages"][0]["name"] == "local"
    assert c["requests_total"] >= before["requests_total"] + 1
    assert c["generated_tokens_total"] >= before["generated_tokens_total"] + 4


def test_cluster_json_two_workers(cluster_server):
    r = cluster_server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4})
    assert r.status_code == 200, r.text
    c = cluster_server.get("/v1/cluster").json()
    check_cluster_shape(c, "SmolLM2-135M-Instruct.Q4_1", SMOLLM2_LAYERS, 2, 4)
    names = [s["name"] for s in c["stages"]]
    assert names == [w.address for w in cluster_server.workers], names


def test_metrics_parse_and_move(server):
    from prometheus_client.parser import text_string_to_metric_families
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(r.text))  # raises on malformed text
    names = {s.name for f in families for s in f.samples}
    for n in ["herd_requests_total", "herd_prompt_tokens_total", "herd_generated_tokens_total",
              "herd_tokens_per_second", "herd_queue_length", "herd_slots_busy", "herd_slots_total",
              "herd_kv_used_cells", "herd_kv_cells_total", "herd_requests_running"]:
        assert n in names, f"/metrics lacks {n}"
    assert all(s.name.startswith("herd_") for f in families for s in f.samples)

    def completions_ok(m):
        return sum(v for l, v in m.get("herd_requests_total", [])
                   if l.get("endpoint", "").endswith("completions") and "chat" not in l.get("endpoint", "")
                   and l.get("status") == "200")

    def total(m, name):
        return sum(v for _, v in m[name])

    before = server.metrics()
    r = server.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    # the books may close just after the reply is written: give them a moment
    deadline = time.monotonic() + 2
    while True:
        after = server.metrics()
        if (completions_ok(after) > completions_ok(before) and total(after, "herd_slots_busy") == 0) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert completions_ok(after) == completions_ok(before) + 1
    assert total(after, "herd_generated_tokens_total") == total(before, "herd_generated_tokens_total") + usage[
        "completion_tokens"]
    assert total(after, "herd_prompt_tokens_total") == total(before, "herd_prompt_tokens_total") + usage[
        "prompt_tokens"]
    assert total(after, "herd_slots_total") == 4
    assert total(after, "herd_slots_busy") == 0
    assert total(after, "herd_requests_running") == 0
    assert total(after, "herd_queue_length") == 0
    assert 0 <= total(after, "herd_kv_used_cells") <= total(after, "herd_kv_cells_total")
    assert total(after, "herd_kv_cells_total") > 0
    # tokens were generated in the last 60 s (counted per whole second: wait for this one to end)
    deadline = time.monotonic() + 2.5
    while server.metric("herd_tokens_per_second") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.metric("herd_tokens_per_second") > 0

    # an error is counted under its status
    def errors400():
        return sum(v for l, v in server.metrics()["herd_requests_total"] if l.get("status") == "400")

    n400 = errors400()
    bad = server.post("/v1/completions", b"{not json")
    assert bad.status_code == 400
    deadline = time.monotonic() + 2
    while errors400() == n400 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert errors400() == n400 + 1


def test_metrics_cluster_stages(cluster_server):
    m = cluster_server.metrics()
    stages = {l.get("stage") for l, _ in m.get("herd_stage_compute_ms", [])}
    assert stages >= {"0", "1"}, f"herd_stage_compute_ms per stage: {m.get('herd_stage_compute_ms')}"
    hops = {l.get("hop") for l, _ in m.get("herd_hop_ms", [])}
    assert hops >= {"0", "1", "2"}, f"herd_hop_ms per hop: {m.get('herd_hop_ms')}"
