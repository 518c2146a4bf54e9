# --api-key (or HERD_API_KEY): every endpoint but GET / and GET /health needs
# `Authorization: Bearer KEY`; a missing or wrong key is 401 with an authentication_error.
import pytest
import requests

from utils import ServerProcess, check_error, finish_server, require_file, stories260k_path

KEY = "sekrit-123"
PROTECTED = [("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 2}),
             ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
             ("GET", "/v1/models", None), ("GET", "/metrics", None), ("GET", "/v1/cluster", None)]


@pytest.fixture(scope="module", params=["flag", "env"])
def keyed_server(request):
    require_file(stories260k_path(), "shared/ must sit beside the repo")
    if request.param == "flag":
        s = ServerProcess(stories260k_path(), ["-t", "1"], api_key=KEY)
    else:
        s = ServerProcess(stories260k_path(), ["-t", "1"], env={"HERD_API_KEY": KEY})
    s.start()
    s.api_key = None  # requests below set the header themselves
    yield s
    finish_server(s)


def call(s, method, path, body, headers):
    return requests.request(method, s.url(path), json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_key_required(keyed_server, method, path, body):
    s = keyed_server
    check_error(call(s, method, path, body, {}), 401, "authentication_error")
    check_error(call(s, method, path, body, {"Authorization": "Bearer wrong"}), 401, "authentication_error")
    check_error(call(s, method, path, body, {"Authorization": "Bearer " + KEY + "x"}), 401, "authentication_error")
    check_error(call(s, method, path, body, {"Authorization": "Bearer " + KEY[:-1]}), 401, "authentication_error")
    check_error(call(s, method, path, body, {"Authorization": KEY}), 401, "authentication_error")
    check_error(call(s, method, path, body, {"Authorization": "Bearer "}), 401, "authentication_error")
    r = call(s, method, path, body, {"Authorization": "Bearer " + KEY})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/health", "/"])
def test_open_without_key(keyed_server, path):
    assert requests.get(keyed_server.url(path), timeout=10).status_code == 200
    assert requests.get(keyed_server.url(path), headers={"Authorization": "Bearer wrong"},
                        timeout=10).status_code == 200


def test_unknown_path_without_key_not_200(keyed_server):
    r = requests.get(keyed_server.url("/v1/nothing"), timeout=10)
    assert r.status_code in (401, 404)


def test_openai_client_key(keyed_server):
    import openai
    with pytest.raises(openai.AuthenticationError):
        keyed_server.openai(api_key="wrong").completions.create(model="x", prompt="Once", max_tokens=2)
    r = keyed_server.openai(api_key=KEY).completions.create(model="x", prompt="Once", max_tokens=2)
    assert r.usage.completion_tokens == 2 or r.choices[0].finish_reason == "stop"
    stream = keyed_server.openai(api_key=KEY).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=3, stream=True)
    assert len(list(stream)) >= 1


def test_unauthorized_not_counted_as_work(keyed_server):
    """A 401 does not run the model: no tokens are generated for it."""
    auth = {"Authorization": "Bearer " + KEY}

    def generated():
        text = requests.get(keyed_server.url("/metrics"), headers=auth, timeout=10).text
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("herd_generated_tokens_total"))

    before = generated()
    for _ in range(3):
        call(keyed_server, "POST", "/v1/completions", {"prompt": "Once", "max_tokens": 5}, {})
    assert generated() == before
