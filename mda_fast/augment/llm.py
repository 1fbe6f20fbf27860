"""Optional: an LLM writes the generator, as in the paper (any OpenAI-compatible chat-completions endpoint).

``ChatClient(url, model, api_key_env)`` POSTs ``{"model", "messages", "temperature", "max_tokens"}`` to
``<url>/chat/completions`` (``url`` like ``http://127.0.0.1:8000/v1``; a URL already ending in
``/chat/completions`` is used as is) with ``urllib``, the key read from the environment variable ``api_key_env``
(sent as ``Authorization: Bearer``; none when the variable is unset or empty), and returns the first choice's
message content.

``llm_generator_rows(motif, examples, client, n_rows, seed, ...)`` asks for a Python function
``generate(seed: int, n: int) -> list[str]`` given the motif's summary and example texts, runs it in the sandbox
(``sandbox.run_generator``), packs its documents into rows and validates their statistics against the motif
(``generators.roundtrip``, with looser tolerances than the built-in round trip). Any failure (HTTP, no code in the
reply, sandbox limit, wrong statistics) falls back to the built-in ``MotifGenerator`` and says why in
``result["message"]``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

from ..errors import MdaFastError
from .generators import MotifGenerator, byte_encode, pack_texts, roundtrip
from .motifs import Motif
from .sandbox import SandboxError, SandboxLimits, run_generator

__all__ = ["LLMError", "ChatClient", "extract_code", "generator_prompt", "llm_generator_rows"]


class LLMError(MdaFastError, RuntimeError):
    """The chat endpoint failed or answered something unusable."""


class ChatClient:
    """A minimal OpenAI-compatible chat-completions client (stdlib only)."""

    def __init__(
        self,
        url: str,
        model: str = "default",
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        temperature: float = 0.0,
        max_tokens: int = 2048,
    ):
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"llm url: expected http(s)://host[:port]/v1, got {url!r}")
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key_env, self.timeout = model, api_key_env, float(timeout)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)

    def complete(self, messages: List[Dict[str, str]]) -> str:
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        ).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload = json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise LLMError(f"{self.endpoint}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise LLMError(f"{self.endpoint}: {getattr(e, 'reason', e)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LLMError(f"{self.endpoint}: the reply is not JSON ({e})") from None
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.endpoint}: no choices[0].message.content in the reply") from None


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def extract_code(reply: str) -> str:
    """The Python code of a reply: its (longest) fenced block, or the reply itself when it defines ``generate``."""
    blocks = _FENCE.findall(reply)
    if blocks:
        return max(blocks, key=len)
    if "def generate" in reply:
        return reply
    raise LLMError("the reply holds no Python code block defining generate(seed, n)")


def generator_prompt(motif: Motif, examples: Sequence[str]) -> List[Dict[str, str]]:
    """The chat messages asking for a generator of ``motif`` (summary + example texts)."""
    ex = "\n\n".join(f"--- example {i + 1} ---\n{t}" for i, t in enumerate(examples))
    return [
        {
            "role": "system",
            "content": "You write small, deterministic Python data generators. Reply with one "
            "```python``` code block only.",
        },
        {
            "role": "user",
            "content": (
                "These training samples most strongly built an induction head in a language model (mechanistic data "
                "attribution). Their common structure, measured:\n"
                f"{json.dumps(motif.summary(), indent=1)}\n\nExamples:\n{ex}\n\n"
                "Write `def generate(seed: int, n: int) -> list[str]` returning n new documents with the same "
                "structure (repeated spans of similar length and distance, the same character classes and nesting), "
                "each about as long as an example. Use only the standard library (`random`, `string`, `math`, "
                "`itertools`), seed a `random.Random(seed)`, no I/O, no network."
            ),
        },
    ]


def llm_generator_rows(
    motif: Motif,
    examples: Sequence[str],
    client: ChatClient,
    n_rows: int,
    seed: int = 0,
    seq_len: Optional[int] = None,
    encode=byte_encode,
    decode=None,
    limits: Optional[SandboxLimits] = None,
    n_docs: int = 64,
    tol: Optional[dict] = None,
) -> Dict[str, object]:
    """Rows from an LLM-written generator of ``motif``, validated, else from the built-in one.

    Returns ``{"rows", "source": "llm" | "builtin", "message", "code", "validation"}``.
    """
    seq_len = int(seq_len or motif.dist["seq_len"])
    code, validation = None, None
    try:
        code = extract_code(client.complete(generator_prompt(motif, examples)))
        docs = run_generator(code, seed=seed, n=n_docs, limits=limits)
        rows = pack_texts(docs, seq_len, max(int(n_rows), 1), encode=encode, eod=int(motif.dist.get("eod", 0)))
        validation = roundtrip(motif, rows, decode, **(tol or {"tol_sd": 1.0, "tol_rel": 0.5, "tol_abs": 0.1}))
        if not validation["ok"]:
            raise LLMError(f"its documents do not match the motif ({', '.join(validation['failed'])})")
        return {
            "rows": rows[: int(n_rows)],
            "source": "llm",
            "message": f"{motif.id}: LLM generator accepted",
            "code": code,
            "validation": validation,
        }
    except (LLMError, SandboxError, ValueError) as e:
        msg = f"{motif.id}: LLM generator rejected ({' '.join(str(e).split())}); using the built-in generator"
        rows = MotifGenerator(motif, seq_len).rows(int(n_rows), seed)
        return {"rows": rows, "source": "builtin", "message": msg, "code": code, "validation": validation}
