# /v1/completions and /v1/chat/completions on stories260K: streaming, seeds, stop strings,
# max_tokens, usage. The official openai client drives most of it; raw SSE where the wire matters.
import subprocess

import pytest

from utils import herd_bin, smollm2_path

PROMPT = "Once upon a time, there was a little girl named Lily."
MESSAGES = [{"role": "user", "content": "Tell me a story about a dog."}]

GREEDY = {"temperature": 0}
SEEDED = {"temperature": 0.9, "seed": 42}


def complete(client, stream: bool, **kw):
    """(text, finish_reason, usage or None) of one completion through the openai client."""
    if not stream:
        r = client.completions.create(model="x", prompt=kw.pop("prompt", PROMPT), **kw)
        assert r.object == "text_completion"
        assert len(r.choices) == 1 and r.choices[0].index == 0
        return r.choices[0].text, r.choices[0].finish_reason, r.usage
    text, finish, usage = "", None, None
    for chunk in client.completions.create(model="x", prompt=kw.pop("prompt", PROMPT), stream=True, **kw):
        assert chunk.object == "text_completion"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            assert finish is None, "a chunk after the one with finish_reason"
            text += c.text or ""
            finish = c.finish_reason or finish
    return text, finish, usage


def chat(client, stream: bool, **kw):
    messages = kw.pop("messages", MESSAGES)
    if not stream:
        r = client.chat.completions.create(model="x", messages=messages, **kw)
        assert r.object == "chat.completion"
        assert len(r.choices) == 1
        assert r.choices[0].message.role == "assistant"
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    text, finish, usage, role = "", None, None, None
    for chunk in client.chat.completions.create(model="x", messages=messages, stream=True, **kw):
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            assert finish is None, "a chunk after the one with finish_reason"
            role = c.delta.role or role
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert role == "assistant"
    return text, finish, usage


CALLS = {"completions": complete, "chat": chat}


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_stream_equals_no_stream(server, endpoint, sampling):
    client = server.openai()
    call = CALLS[endpoint]
    a = call(client, False, max_tokens=24, **sampling)
    b = call(client, True, max_tokens=24, **sampling)
    assert a[0], "empty text"
    assert b[0] == a[0]
    assert b[1] == a[1]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_same_seed_same_text_other_seeds_differ(server, endpoint):
    client = server.openai()
    call = CALLS[endpoint]
    texts = {}
    for seed in [1, 2, 3, 4]:
        texts[seed] = call(client, False, max_tokens=24, temperature=1.0, seed=seed)[0]
        again = call(client, False, max_tokens=24, temperature=1.0, seed=seed)[0]
        assert again == texts[seed], f"seed {seed} gave two texts"
    assert len(set(texts.values())) >= 3, f"four seeds, texts: {texts}"


def test_greedy_ignores_seed(server):
    client = server.openai()
    a = complete(client, False, max_tokens=16, temperature=0, seed=1)[0]
    b = complete(client, False, max_tokens=16, temperature=0, seed=2)[0]
    assert a == b


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_stop_string(server, endpoint, stream):
    client = server.openai()
    call = CALLS[endpoint]
    full, finish, _ = call(client, False, max_tokens=40, temperature=0)
    # a stop string that the greedy text contains well after its start: the second word-ish piece
    # found after 10 characters (so the text before it is not empty)
    words = [w for w in full[10:].split() if len(w) >= 3]
    assert words, f"the greedy text has no word to stop at: {full!r}"
    stop = words[0]
    expected = full[:full.find(stop)]
    text, finish, usage = call(client, stream, max_tokens=40, temperature=0, stop=stop)
    assert stop not in text
    assert text == expected
    assert finish == "stop"
    # a list of stops: the first one the text reaches wins
    stops = ["zzzzqqq", stop, "xxxxyyy"]
    text, finish, _ = call(client, stream, max_tokens=40, temperature=0, stop=stops)
    assert text == expected and finish == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_max_tokens_length(server, endpoint, stream):
    client = server.openai()
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    text, finish, usage = CALLS[endpoint](client, stream, max_tokens=7, temperature=0, **extra)
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == 7
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_completion_tokens(server):
    r = server.post("/v1/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 5, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_usage_consistent(server):
    r = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200, r.text
    u1 = r.json()["usage"]
    assert set(u1) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert u1["total_tokens"] == u1["prompt_tokens"] + u1["completion_tokens"]
    assert 0 < u1["completion_tokens"] <= 10
    # a longer prompt counts more prompt tokens; the same prompt the same number
    r2 = server.post("/v1/completions", {"prompt": PROMPT + " She liked to play outside.", "max_tokens": 3})
    u2 = r2.json()["usage"]
    assert u2["prompt_tokens"] > u1["prompt_tokens"]
    r3 = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 3})
    assert r3.json()["usage"]["prompt_tokens"] == u1["prompt_tokens"]
    # the prompt as token ids: prompt_tokens is their count
    r4 = server.post("/v1/completions", {"prompt": [1, 400, 401, 402, 403], "max_tokens": 3})
    assert r4.status_code == 200, r4.text
    assert r4.json()["usage"]["prompt_tokens"] == 5


def test_prompt_forms_agree(server):
    """prompt as a string and as a list of one string give the same greedy text."""
    a = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}).json()
    b = server.post("/v1/completions", {"prompt": [PROMPT], "max_tokens": 12, "temperature": 0}).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["usage"] == b["usage"]


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_include_usage_final_chunk(server, endpoint):
    body = {"max_tokens": 9, "temperature": 0, "stream_options": {"include_usage": True}}
    body.update({"prompt": PROMPT} if "chat" not in endpoint else {"messages": MESSAGES})
    chunks = list(server.stream(endpoint, body))
    plain = server.post(endpoint, {k: v for k, v in body.items() if k != "stream_options"}).json()
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1, f"usage chunks: {with_usage}"
    last = chunks[-1]
    assert last is with_usage[0], "the usage chunk is not the last one"
    assert last["choices"] == []
    assert last["usage"] == plain["usage"]
    # and without include_usage no chunk carries usage numbers
    body.pop("stream_options")
    assert not [c for c in server.stream(endpoint, body) if c.get("usage")]


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_raw_sse_shape(server, endpoint):
    body = {"max_tokens": 6, "temperature": 0}
    body.update({"prompt": PROMPT} if "chat" not in endpoint else {"messages": MESSAGES})
    chunks = list(server.stream(endpoint, body))
    assert chunks
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1, "every chunk of one stream has the same id"
    obj = "chat.completion.chunk" if "chat" in endpoint else "text_completion"
    assert all(c["object"] == obj for c in chunks)
    assert all(c["model"] == "stories260K" for c in chunks)
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")]
    assert finishes == ["length"]


def test_chat_template_fallback_works(server):
    """stories260K has no chat template: the server falls back to chatml and still answers."""
    r = server.post("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "Hi"},
                                                          {"role": "assistant", "content": "Hello."},
                                                          {"role": "user", "content": "A story?"}],
                                             "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["prompt_tokens"] > 10


def test_cluster_stream_equals_no_stream(cluster_server):
    client = cluster_server.openai()
    question = "Why is the sky blue? Answer in one sentence."
    msgs = [{"role": "user", "content": question}]
    for sampling in (GREEDY, SEEDED):
        a = chat(client, False, messages=msgs, max_tokens=24, **sampling)
        b = chat(client, True, messages=msgs, max_tokens=24, **sampling)
        assert a[0] and a[0] == b[0]
        assert a[1] == b[1]
    # greedy on the cluster == greedy `herd chat` in one process (same template, same tokens)
    greedy = chat(client, False, messages=msgs, max_tokens=24, temperature=0)[0]
    cli = subprocess.run([herd_bin(), "chat", "-m", smollm2_path(), "-p", question, "--temp", "0", "-n", "24",
                          "-t", "1"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert greedy == cli.stdout.removesuffix("\n")
    assert "sky" in greedy
