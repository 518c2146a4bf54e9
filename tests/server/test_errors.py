# Bad requests get the right status and an OpenAI error object, and the server keeps serving.
import json

import pytest

from utils import check_error, raw_http

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSGS = [{"role": "user", "content": "Hi"}]


def still_serving(server):
    assert server.alive()
    r = server.post(COMP, {"prompt": "Once upon a time", "max_tokens": 2})
    assert r.status_code == 200, f"the server no longer serves after the error: {r.status_code} {r.text}"


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"prompt": "a", "max_tokens": 2', b"[1, 2]", b'"a string"',
                                  b"null", b'{"prompt": "a"}{"prompt": "b"}', b"\xff\xfe{}"],
                         ids=["garbage", "empty", "truncated", "array", "string", "null", "two-objects", "bad-utf8"])
@pytest.mark.parametrize("endpoint", [COMP, CHAT])
def test_malformed_json_400(server, endpoint, body):
    check_error(server.post(endpoint, body), 400, "invalid_request_error")
    still_serving(server)


WRONG_TYPES = [
    (COMP, {"prompt": "a", "max_tokens": "x"}, "max_tokens"),
    (COMP, {"prompt": "a", "temperature": "hot"}, "temperature"),
    (COMP, {"prompt": "a", "top_p": "high"}, "top_p"),
    (COMP, {"prompt": "a", "top_k": "many"}, "top_k"),
    (COMP, {"prompt": "a", "seed": "abc"}, "seed"),
    (COMP, {"prompt": "a", "stream": "yes"}, "stream"),
    (COMP, {"prompt": "a", "stop": 5}, "stop"),
    (COMP, {"prompt": "a", "stop": ["a", 5]}, "stop"),
    (COMP, {"prompt": "a", "stream_options": "usage"}, "stream_options"),
    (COMP, {"prompt": 5}, "prompt"),
    (COMP, {"prompt": {"text": "a"}}, "prompt"),
    (COMP, {"prompt": "a", "temperature": [1]}, "temperature"),
    (CHAT, {"messages": "hello"}, "messages"),
    (CHAT, {"messages": {"role": "user", "content": "hi"}}, "messages"),
    (CHAT, {"messages": ["hi"]}, "messages"),
    (CHAT, {"messages": [{"role": 5, "content": "hi"}]}, "role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "content"),
    (CHAT, {"messages": MSGS, "max_tokens": "x"}, "max_tokens"),
    (CHAT, {"messages": MSGS, "max_completion_tokens": "x"}, "max_completion_tokens"),
    (CHAT, {"messages": MSGS, "temperature": "hot"}, "temperature"),
]


@pytest.mark.parametrize("endpoint,body,field", WRONG_TYPES,
                         ids=[f"{e.split('/')[-1]}-{f}-{i}" for i, (e, _, f) in enumerate(WRONG_TYPES)])
def test_wrong_type_400(server, endpoint, body, field):
    check_error(server.post(endpoint, body), 400, "invalid_request_error", mentions=field)
    still_serving(server)


UNSUPPORTED = [
    (COMP, {"prompt": "a", "frobnicate": 1}, "frobnicate"),
    (CHAT, {"messages": MSGS, "frobnicate": 1}, "frobnicate"),
    (COMP, {"prompt": "a", "n": 2}, "n"),
    (CHAT, {"messages": MSGS, "n": 2}, "n"),
    (CHAT, {"messages": MSGS, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    (CHAT, {"messages": MSGS, "tool_choice": "auto"}, "tool_choice"),
    (CHAT, {"messages": MSGS, "logprobs": True}, "logprobs"),
    (CHAT, {"messages": MSGS, "response_format": {"type": "json_object"}}, "response_format"),
    (COMP, {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (COMP, {"max_tokens": 2}, "prompt"),
    (CHAT, {"max_tokens": 2}, "messages"),
    (CHAT, {"messages": MSGS, "prompt": "a"}, "prompt"),
]


@pytest.mark.parametrize("endpoint,body,field", UNSUPPORTED,
                         ids=[f"{e.split('/')[-1]}-{f}-{i}" for i, (e, _, f) in enumerate(UNSUPPORTED)])
def test_unsupported_or_unknown_field_400(server, endpoint, body, field):
    check_error(server.post(endpoint, body), 400, "invalid_request_error", mentions=field)
    still_serving(server)


@pytest.mark.parametrize("body", [
    {"prompt": "a", "n": 1, "user": "someone", "logprobs": False},
    {"prompt": ["a"], "stop": ["x", "y", "z", "w"], "presence_penalty": 0.5, "frequency_penalty": 0.5},
])
def test_allowed_fields_accepted(server, body):
    r = server.post(COMP, dict(body, max_tokens=2))
    assert r.status_code == 200, r.text


def test_allowed_chat_fields_accepted(server):
    r = server.post(CHAT, {"messages": MSGS, "max_tokens": 2, "n": 1, "logprobs": False, "user": "u",
                           "response_format": {"type": "text"}, "top_k": 5, "min_p": 0.05, "repeat_penalty": 1.1,
                           "stream": False})
    assert r.status_code == 200, r.text


def test_openai_client_sees_bad_request(server):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        server.openai().chat.completions.create(model="x", messages=MSGS, n=2)
    assert e.value.status_code == 400
    still_serving(server)


def test_huge_body_413(server):
    body = json.dumps({"prompt": "a " * (1 << 20), "max_tokens": 2}).encode()  # 2 MiB > the 1 MiB default
    check_error(server.post(COMP, body), 413)
    still_serving(server)


def test_max_body_option(make_server):
    s = make_server(args=["-t", "1", "--max-body", "2000"])
    check_error(s.post(COMP, {"prompt": "a " * 1500, "max_tokens": 2}), 413)
    assert s.post(COMP, {"prompt": "a " * 100, "max_tokens": 2}).status_code == 200


def test_prompt_longer_than_context_400(make_server):
    s = make_server(args=["-t", "1", "-c", "64"])
    long_prompt = "Once upon a time there was a little girl who liked to play. " * 20  # > 64 tokens
    check_error(s.post(COMP, {"prompt": long_prompt, "max_tokens": 4}), 400, "invalid_request_error")
    check_error(s.post(CHAT, {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4}), 400,
                "invalid_request_error")
    # a streamed request is refused before the stream starts
    check_error(s.post(COMP, {"prompt": long_prompt, "max_tokens": 4, "stream": True}), 400, "invalid_request_error")
    r = s.post(COMP, {"prompt": "Once upon a time", "max_tokens": 4})
    assert r.status_code == 200, r.text
    # a prompt that fits, with more max_tokens than the context leaves: it stops at the context
    r = s.post(COMP, {"prompt": "Once upon a time", "max_tokens": 500, "temperature": 0.8, "seed": 1})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    # the last token is sampled from position 63's logits and never enters the cache: 64 + 1
    assert u["total_tokens"] <= 64 + 1
    if r.json()["choices"][0]["finish_reason"] == "length":
        assert u["completion_tokens"] < 500


@pytest.mark.parametrize("method,path", [("GET", "/v1/nothing"), ("POST", "/v2/chat/completions"),
                                         ("GET", "/healthz"), ("POST", "/v1/embeddings"), ("GET", "/v1/models/x/y")])
def test_unknown_path_404(server, method, path):
    import requests
    r = requests.request(method, server.url(path), json={}, timeout=10)
    check_error(r, 404, "not_found_error")
    still_serving(server)


@pytest.mark.parametrize("method,path", [("GET", CHAT), ("GET", COMP), ("PUT", COMP), ("DELETE", "/v1/models"),
                                         ("POST", "/health"), ("POST", "/metrics")])
def test_wrong_method_404_or_405(server, method, path):
    import requests
    r = requests.request(method, server.url(path), json={"prompt": "a"}, timeout=10)
    check_error(r, (404, 405))
    still_serving(server)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
], ids=["not-http", "negative-length", "nonnumeric-length", "overflowing-length"])
def test_broken_http_answered_and_survived(server, request_bytes):
    status, _ = raw_http(server.host, server.port, request_bytes)
    assert status in (0, 400, 411, 413), f"status {status}"  # 0: the server just closed the connection
    still_serving(server)


def test_client_closing_before_body_survived(server):
    import socket
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
    still_serving(server)
