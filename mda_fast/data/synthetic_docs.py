"""The synthetic corpus's document generators: one seeded function per category (``GENERATORS[name](rng, config)``
returns one document's text). Packing and the corpus: :mod:`mda_fast.data.synthetic`.
"""

from __future__ import annotations

import base64
from typing import Callable, Dict, List

import numpy as np

__all__ = ["GENERATORS"]

# -- word lists ---------------------------------------------------------------------------------------------------
_DET = "the a this that every some one each my our their his her no".split()
_ADJ = (
    "old new small large quiet bright dark green red blue cold warm quick slow strange simple early late "
    "heavy light young ancient silent gentle broken hidden open narrow wide deep soft hard clever"
).split()
_NOUN = (
    "cat dog river stone tree house city road garden window door letter book song friend child teacher "
    "farmer king queen ship island mountain forest bridge market tower clock lamp table field bird horse "
    "village storm winter morning evening kitchen engine wheel signal story voice"
).split()
_VERB = (
    "saw found took built opened closed carried followed watched heard painted crossed visited left "
    "reached moved pushed pulled wrote read lost kept sold bought chose"
).split()
_ADV = "slowly quickly quietly often never always suddenly carefully again soon".split()
_PREP = "in on under near with across behind before after beside over into".split()
_NAME = (
    "Alice Bruno Clara Dmitri Elena Farid Grace Hiro Ines Jonas Kiri Lena Marco Nadia Omar Priya Quinn Rosa Sven Tomas"
).split()
_CITY = ("Lisbon Oslo Cairo Lima Quito Hanoi Dakar Perth Riga Turin Kyoto Nairobi Porto Zagreb Austin Bergen").split()
_TAG = ("item name title price author city note entry value record field date id label group node").split()
_ROOT = "catalog library inventory records config feed dataset list".split()
_LEVEL = "INFO INFO INFO DEBUG WARN ERROR".split()
_EVENT = "request.start request.end cache.miss cache.hit db.query auth.ok retry upload done".split()
_GREEK = r"\alpha \beta \gamma \delta \lambda \mu \sigma \theta \omega \phi".split()
_LATEX_ENV = "itemize enumerate description".split()
_OPS = "+ - * //".split()
_PRINTABLE = np.arange(33, 127, dtype=np.uint8)


def _pick(r: int, words: List[str]) -> str:
    return words[r % len(words)]


def _sentence(r: np.ndarray) -> str:
    """One sentence from a small grammar; ``r`` holds 12 random ints."""
    subj = f"{_pick(r[0], _DET)} {_pick(r[1], _ADJ)} {_pick(r[2], _NOUN)}" if r[11] % 3 else _pick(r[0], _NAME)
    obj = f"{_pick(r[3], _DET)} {_pick(r[4], _NOUN)}"
    s = f"{subj} {_pick(r[5], _VERB)} {obj}"
    if r[10] % 2:
        s += f" {_pick(r[6], _PREP)} {_pick(r[7], _DET)} {_pick(r[8], _ADJ)} {_pick(r[9], _NOUN)}"
    if r[10] % 5 == 0:
        s += f" {_pick(r[9], _ADV)}"
    return s[0].upper() + s[1:] + "."


def _words(r: np.ndarray) -> str:
    return " ".join(_pick(int(x), _NOUN if i % 2 else _ADJ) for i, x in enumerate(r))


def _gen_prose(rng: np.random.Generator, cfg) -> str:
    n = int(rng.integers(2, 9))
    r = rng.integers(0, 1 << 30, size=(n, 12))
    return " ".join(_sentence(row) for row in r) + "\n"


def _gen_xml(rng: np.random.Generator, cfg) -> str:
    n_fields, n_rec = int(rng.integers(2, 5)), int(rng.integers(2, 6))
    tags = [_TAG[i] for i in rng.choice(len(_TAG), size=n_fields, replace=False)]
    root, rec = _pick(int(rng.integers(1 << 30)), _ROOT), _pick(int(rng.integers(1 << 30)), _TAG[:6])
    r = rng.integers(0, 1 << 30, size=(n_rec, n_fields, 2))
    ids = rng.integers(1, 1000, size=n_rec)
    lines = [f"<{root}>"]
    for i in range(n_rec):
        lines.append(f'  <{rec} id="{ids[i]}">')
        for j, t in enumerate(tags):
            lines.append(f"    <{t}>{_words(r[i, j, : 1 + r[i, j, 1] % 2])}</{t}>")
        lines.append(f"  </{rec}>")
    lines.append(f"</{root}>")
    return "\n".join(lines) + "\n"


def _gen_latex(rng: np.random.Generator, cfg) -> str:
    r = rng.integers(0, 1 << 30, size=24)
    var = [f"{_pick(int(r[i]), list('xyzabnkt'))}" for i in range(3)]
    g = [_pick(int(r[3 + i]), _GREEK) for i in range(2)]
    env = _pick(int(r[5]), _LATEX_ENV)
    title = f"{_pick(int(r[6]), _ADJ).capitalize()} {_pick(int(r[7]), _NOUN)}s"
    items = "\n".join(f"  \\item {_words(r[8 + 2 * i : 10 + 2 * i])}" for i in range(1 + int(r[20]) % 4))
    return (
        f"\\section{{{title}}}\n"
        f"\\begin{{equation}}\n  {var[0]}_{{{var[1]}}} = \\frac{{{g[0]} {var[1]}}}{{{g[1]} + {var[2]}}}"
        f" + \\sum_{{{var[1]}=1}}^{{n}} {var[2]}_{{{var[1]}}}\n\\end{{equation}}\n"
        f"\\begin{{{env}}}\n{items}\n\\end{{{env}}}\n"
    )


def _ident(r: np.ndarray) -> str:
    return f"{_pick(int(r[0]), _ADJ)}_{_pick(int(r[1]), _NOUN)}"


def _gen_code(rng: np.random.Generator, cfg) -> str:
    n_fn = int(rng.integers(1, 4))
    r = rng.integers(0, 1 << 30, size=(n_fn, 12))
    out = []
    prev = None
    for row in r:
        fn, a, b, v = _ident(row[0:2]), _ident(row[2:4]), _ident(row[4:6]), _ident(row[6:8])
        op = _pick(int(row[8]), _OPS)
        body = f"def {fn}({a}, {b}):\n    {v} = {a} {op} {b}\n    if {v} > {int(row[9]) % 100}:\n        return {v}\n"
        body += f"    return {prev}({v}, {b})\n" if prev else f"    return {a}\n"
        out.append(body)
        prev = fn
    return "\n".join(out) + "\n"


def _uuid(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _gen_hexlog(rng: np.random.Generator, cfg) -> str:
    ids = [_uuid(rng) for _ in range(int(rng.integers(1, 4)))]
    n = int(rng.integers(3, 9))
    r = rng.integers(0, 1 << 30, size=(n, 5))
    t0 = int(rng.integers(0, 86400 - 600))
    lines = []
    t = t0
    for row in r:
        t += int(row[0]) % 20
        lines.append(
            f"2026-11-22T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z {_pick(int(row[1]), _LEVEL)} "
            f"[{ids[int(row[2]) % len(ids)]}] {_pick(int(row[3]), _EVENT)} sha={int(row[4]):08x}"
        )
    return "\n".join(lines) + "\n"


def _gen_base64(rng: np.random.Generator, cfg) -> str:
    blob = base64.b64encode(rng.bytes(int(rng.integers(48, 360)))).decode("ascii")
    return "data:application/octet-stream;base64," + "\n".join(blob[i : i + 76] for i in range(0, len(blob), 76)) + "\n"


def _gen_csv(rng: np.random.Generator, cfg) -> str:
    n = int(rng.integers(3, 12))
    r = rng.integers(0, 1 << 30, size=(n, 4))
    lines = ["id,name,city,amount,date"]
    start = int(rng.integers(1, 9000))
    for i, row in enumerate(r):
        lines.append(
            f"{start + i},{_pick(int(row[0]), _NAME)},{_pick(int(row[1]), _CITY)},"
            f"{int(row[2]) % 100000 / 100:.2f},2026-{1 + int(row[3]) % 12:02d}-{1 + int(row[3]) % 28:02d}"
        )
    return "\n".join(lines) + "\n"


def _gen_repeat(rng: np.random.Generator, cfg) -> str:
    lo, hi = cfg.repeat_len
    chunk = rng.choice(_PRINTABLE, size=int(rng.integers(lo, hi + 1))).tobytes().decode("ascii")
    k = int(rng.integers(cfg.repeat_copies[0], cfg.repeat_copies[1] + 1))
    fill = rng.integers(0, 1 << 30, size=(k, 3))
    parts = []
    for i in range(k):
        parts.append(chunk)
        parts.append(" " + " ".join(_pick(int(x), _NOUN) for x in fill[i, : 1 + fill[i, 2] % 3]) + " ")
    return "".join(parts).rstrip() + "\n"


GENERATORS: Dict[str, Callable] = {
    "prose": _gen_prose,
    "xml": _gen_xml,
    "latex": _gen_latex,
    "code": _gen_code,
    "hexlog": _gen_hexlog,
    "base64": _gen_base64,
    "csv": _gen_csv,
    "repeat": _gen_repeat,
}
