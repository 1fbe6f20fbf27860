"""The chat-completions client against a local server on 127.0.0.1, and the LLM generator with its fallback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from mda_fast.augment.llm import ChatClient, LLMError, extract_code, llm_generator_rows
from mda_fast.augment.motifs import mine_motifs

CODE = """import random, string
def generate(seed, n):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        chunk = "".join(r.choice(string.ascii_letters + string.punctuation) for _ in range(r.randint(12, 20)))
        out.append(" ".join([chunk, "river stone", chunk, "old tree", chunk]))
    return out
"""


class Handler(BaseHTTPRequestHandler):
    reply = "```python\n" + CODE + "```"
    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Handler.reply is None:
            self.send_response(500)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": Handler.reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    Handler.seen.clear()
    Handler.reply = "```python\n" + CODE + "```"
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def enc(s):
    return np.frombuffer(s.encode(), np.uint8).astype(np.int64) + 4


@pytest.fixture(scope="module")
def motif():
    import random
    import string

    r = random.Random(0)
    rows = []
    for _ in range(20):
        text = ""
        while len(text) < 129:
            chunk = "".join(r.choice(string.ascii_letters + string.punctuation) for _ in range(r.randint(12, 20)))
            text += " ".join([chunk, "river stone", chunk, "old tree", chunk]) + "\0"
        rows.append(np.where(enc(text[:129]) == 4, 0, enc(text[:129])))
    return mine_motifs(np.stack(rows), list(range(20)), n_motifs=1)["motifs"][0]


def test_client_sends_key_and_model(server, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test")
    c = ChatClient(server, model="m1", api_key_env="MY_LLM_KEY")
    out = c.complete([{"role": "user", "content": "hi"}])
    assert "def generate" in out
    s = Handler.seen[-1]
    assert s["path"] == "/v1/chat/completions" and s["auth"] == "Bearer sk-test" and s["body"]["model"] == "m1"
    assert s["body"]["messages"][0]["content"] == "hi"


def test_client_errors(server, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    Handler.reply = None
    with pytest.raises(LLMError, match="HTTP 500"):
        ChatClient(server, api_key_env="NO_SUCH_KEY").complete([])
    assert Handler.seen[-1]["auth"] is None
    with pytest.raises(ValueError):
        ChatClient("ftp://x")
    with pytest.raises(LLMError):
        ChatClient("http://127.0.0.1:9/v1", timeout=2).complete([])  # nothing listens on port 9


def test_extract_code():
    assert extract_code("text\n```python\ndef generate(s, n):\n    return []\n```\nmore").startswith("def generate")
    with pytest.raises(LLMError):
        extract_code("no code here")


def test_llm_generator_accepted(server, motif):
    res = llm_generator_rows(motif, ["example"], ChatClient(server), n_rows=30, seed=0)
    assert res["source"] == "llm", res["message"]
    assert res["rows"].shape == (30, 129) and res["validation"]["ok"]
    prompt = Handler.seen[-1]["body"]["messages"][1]["content"]
    assert "copy_frac" in prompt and "example" in prompt


@pytest.mark.parametrize(
    "reply,why",
    [
        ("```python\ndef generate(seed, n):\n    while True:\n        pass\n```", "limit"),
        ("```python\ndef generate(seed, n):\n    return ['aaaa bbbb cccc'] * n\n```", "do not match"),
        ("I cannot help with that.", "no Python code"),
    ],
)
def test_llm_generator_falls_back(server, motif, reply, why):
    from mda_fast.augment.sandbox import SandboxLimits

    Handler.reply = reply
    res = llm_generator_rows(
        motif, ["example"], ChatClient(server), n_rows=8, seed=0, limits=SandboxLimits(cpu_s=1, wall_s=3)
    )
    assert res["source"] == "builtin" and why in res["message"] and "built-in" in res["message"]
    assert res["rows"].shape == (8, 129)
