"""A labelled set of real files of every content category, for the content classifier's precision and recall.

Files come from the machine and the installed packages (the standard library, the project's dependencies,
``/usr/include``, ``/usr/share``), chosen deterministically (ordered by the SHA-256 of their path,
at most ``per_category`` per category), each recorded with its SHA-256. Where a category has no files on a machine
(LaTeX, the blob kinds, and logs: ``/var/log`` grows while a machine runs), the set writes documents from the kind's published
grammar with a seeded generator (:func:`generated_documents`): LaTeX from the LaTeX2e command syntax around English
sentences taken from the set's own prose files, base64 (RFC 4648, 76-character lines, PEM armour from RFC 7468), hex
(``xxd -p`` lines, C byte arrays, spaced byte dumps), UUIDs (RFC 9562, version 4), hash lists (``sha256sum`` /
``md5sum`` output lines, RFC 1321 / FIPS 180-4 digest lengths) and logs (RFC 3164 and RFC 5424 syslog, the Apache
Common Log Format, Python's ``logging`` default format).

:func:`pieces` cuts row-sized pieces from each document at seeded offsets: ``n_tokens`` tokens of a tokenizer (a
Pythia row, 2,049 GPT-NeoX tokens) or ``n_bytes`` bytes (a row of the byte-level demo corpus, 129 bytes), so the
measure is the one that matters for rows that start and end anywhere in a document.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import hashlib
import os
import sysconfig
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .content_rules import decide, features
from .prose_regions import regions

__all__ = [
    "Document",
    "labelled_documents",
    "generated_documents",
    "pieces",
    "precision_recall",
    "SOURCES",
    "split_of",
    "set_digest",
    "HELDOUT_SHARE",
    "PER_CATEGORY",
    "LABELS",
    "content_label",
]

#: files (and generated documents) per category at most; :func:`split_of` then holds out about half of them
PER_CATEGORY = 100


@dataclass
class Document:
    category: str
    source: str  # a path on this machine, or "generated:<kind>/<i>"
    text: str
    sha256: str
    key: str = ""  # the path below its root (or the generated name): the same wherever the files lie

    @property
    def split(self) -> str:
        """``"train"`` or ``"heldout"``: :func:`split_of` the document's key."""
        return split_of(self.key or self.source)


#: the share of the documents held out from training (by :func:`split_of`)
HELDOUT_SHARE = 0.5


def split_of(key: str) -> str:
    """``"train"`` or ``"heldout"`` by the SHA-256 of ``key`` (a path below its root, or a generated name), so the
    split depends neither on where the files lie nor on which other files a machine has."""
    h = int(hashlib.sha256(("split\0" + key).encode()).hexdigest()[:8], 16)
    return "heldout" if h < HELDOUT_SHARE * (1 << 32) else "train"


def _site_packages() -> List[str]:
    import numpy as _np

    return sorted({os.path.dirname(os.path.dirname(_np.__file__)), sysconfig.get_paths()["purelib"]})


def _stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


#: category -> list of (root thunk, glob patterns relative to the root, path excludes)
SOURCES: Dict[str, List[tuple]] = {
    "python": [(lambda: [_stdlib()], ["*.py", "*/*.py"], ["test/*", "*/test/*", "*/tests/*", "site-packages/*"])],
    "c": [
        (_site_packages, ["numpy/_core/include/numpy/*.h", "torch/include/c10/*/*.h", "pybind11/include/*/*.h"], []),
        (lambda: ["/usr/include"], ["*.h", "*/*.h"], []),
    ],
    "javascript": [
        (_site_packages, ["matplotlib/backends/web_backend/js/*.js", "torch/utils/model_dump/*.js"], []),
        (lambda: ["/usr/share/javascript"], ["*/*.js", "*/*/*.js"], ["*.min.js"]),
        (
            lambda: ["/usr/lib/node_modules"],
            ["npm/lib/*.js", "npm/lib/*/*.js", "npm/node_modules/*/lib/*.js", "npm/node_modules/*/lib/*/*.js"],
            ["*.min.js"],
        ),
    ],
    "xml": [
        (lambda: [os.path.join(_stdlib(), "test")], ["*.xml", "*/*.xml", "*.html", "*/*.html", "*.xsd"], []),
        (_site_packages, ["matplotlib/mpl-data/images/*.svg"], []),
        (lambda: ["/usr/share/xml", "/usr/share/doc"], ["*/*.xml", "*/*.html", "*/*/*.html"], []),
        (lambda: [_stdlib()], ["idlelib/help.html"], []),
    ],
    "json": [
        (_site_packages, ["*.dist-info/sboms/*.json", "cmake/data/share/*/Templates/MSBuild/FlagTables/*.json"], []),
        (lambda: ["/usr/share/iso-codes/json"], ["*.json"], []),
        (lambda: ["/usr/lib/node_modules"], ["npm/node_modules/*/package.json"], []),
    ],
    "config": [
        (
            _site_packages,
            [
                "torchgen/packaged/*/*.yaml",
                "torchgen/packaged/*/*/*.yaml",
                "*/*.toml",
                "*/*/*.toml",
                "*/*.ini",
                "*/*/*/*.ini",
                "*/*.cfg",
                "*/*/*.yaml",
                "*/*/*/*/*/*.yaml",
                "*.dist-info/entry_points.txt",
            ],
            [],
        ),
        (lambda: ["/etc"], ["*.conf", "*/*.conf", "*/*/*.conf", "*/*.yaml", "*/*.yml", "*/*.ini", "*/*.cfg"], []),
    ],  # fmt: skip
    "table": [
        (
            _site_packages,
            ["matplotlib/mpl-data/sample_data/*.csv", "numpy/random/tests/data/*.csv", "numpy/_core/tests/data/*.csv"],
            [],
        ),
        (lambda: ["/usr/share/distro-info"], ["*.csv"], []),
    ],  # fmt: skip
    "markdown": [
        (_site_packages, ["*/*.md", "*/*/*.md", "*.dist-info/licenses/*.md", "cmake/data/share/*/Help/*/*.rst"], [])
    ],
    # logs are generated only: the files under /var/log grow while a machine runs, so the set would not be stable
    "prose_en": [
        (lambda: ["/usr/share/common-licenses"], ["*"], []),
        (lambda: ["/usr/share/doc"], ["*/README", "*/README.Debian", "*/README.txt"], []),
        (lambda: [_stdlib()], ["idlelib/*.txt"], []),
        (
            _site_packages,
            ["*.dist-info/LICENSE*", "*.dist-info/licenses/LICENSE*", "matplotlib/mpl-data/fonts/ttf/LICENSE*"],
            [],
        ),
        (lambda: [os.path.dirname(_stdlib())], ["*/LICENSE.txt"], []),
    ],  # fmt: skip
    "prose_other": [(lambda: [os.path.join(_stdlib(), "test", "cjkencodings")], ["*-utf8.txt"], [])],
}


def _read_text(path: str, max_bytes: int) -> Optional[str]:
    try:
        if not os.path.isfile(path) or os.path.getsize(path) < 200:
            return None
        with open(path, "rb") as f:
            data = f.read(max_bytes)
        if b"\0" in data:
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _files(category: str, limit: int, max_bytes: int) -> List[Document]:
    seen, out = set(), []
    for roots, patterns, excludes in SOURCES.get(category, []):
        for root in roots():
            cands = set()
            for pat in patterns:
                cands.update(glob.glob(os.path.join(root, pat)))
            for p in sorted(cands):
                rel = os.path.relpath(p, root)
                own = "mda_fast" in rel or "mda-fast" in rel or "_editable" in rel  # this install: differs per clone
                if own or any(fnmatch.fnmatch(rel, x) for x in excludes) or os.path.realpath(p) in seen:
                    continue
                seen.add(os.path.realpath(p))
                out.append((rel, p))
    # ordered by the hash of the path below its root: where the interpreter or the virtual environment lies does
    # not change which files are chosen
    out.sort(key=lambda rp: hashlib.sha256(rp[0].encode()).hexdigest())
    docs = []
    for rel, p in out:
        text = _read_text(p, max_bytes)
        if text is not None and text.strip():
            # the file's format where its name says config and its first line says XML (fontconfig's .conf files):
            # XML, and not counted against the category's limit
            xml = category == "config" and text.lstrip()[:9].lower().startswith(("<?xml", "<!doctype"))
            docs.append(Document("xml" if xml else category, p, text, hashlib.sha256(text.encode()).hexdigest(), rel))
            if sum(d.category == category for d in docs) >= limit:
                break
    return docs


def _mo_messages(data: bytes, original: bool = False) -> List[str]:
    """The translated (or, with ``original``, the original) strings of a GNU gettext ``.mo`` catalog (its published
    layout: magic, revision, count, then the offsets of the original and the translation tables of (length, offset)
    pairs)."""
    import struct

    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else ""
    if not end:
        return []
    _, n, orig, trans = struct.unpack(end + "4I", data[4:20])
    trans = orig if original else trans
    out = []
    for i in range(n):
        length, off = struct.unpack(end + "2I", data[trans + 8 * i : trans + 8 * i + 8])
        out.append(data[off : off + length].decode("utf-8", errors="replace"))
    return out


def _catalog_documents(limit: int) -> List[Document]:
    """Translated messages of the machine's gettext catalogs (``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``),
    one document per catalog (languages other than English)."""
    paths = sorted(
        glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo"), key=lambda p: hashlib.sha256(p.encode()).hexdigest()
    )
    docs = []
    for p in paths:
        if p.split(os.sep)[-3].startswith("en") or os.path.basename(p).startswith("iso"):  # iso_*: lists of names
            continue
        try:
            with open(p, "rb") as f:
                msgs = [m for m in _mo_messages(f.read())[1:] if len(m) > 30]  # [0]: the catalog's header
        except (OSError, ValueError):
            continue
        text = "\n\n".join(msgs)
        if len(text) >= 2000:
            key = os.path.relpath(p, "/usr/share/locale")
            docs.append(Document("prose_other", p, text, hashlib.sha256(text.encode()).hexdigest(), key))
            if len(docs) >= limit:
                break
    return docs


def _english_catalog_documents(limit: int) -> List[Document]:
    """The original (English) messages of the machine's gettext catalogs, one document per catalog name (the
    messages a program shows: short English sentences unlike the licences')."""
    paths = sorted(
        glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo"), key=lambda p: hashlib.sha256(p.encode()).hexdigest()
    )
    docs, names = [], set()
    for p in paths:
        name = os.path.basename(p)
        if name in names or name.startswith("iso"):
            continue
        try:
            with open(p, "rb") as f:
                msgs = [m for m in _mo_messages(f.read(), original=True) if len(m) > 30]
        except (OSError, ValueError):
            continue
        text = "\n\n".join(msgs)
        if len(text) >= 2000:
            names.add(name)
            docs.append(Document("prose_en", p, text, hashlib.sha256(text.encode()).hexdigest(), f"msgid:{name}"))
            if len(docs) >= limit:
                break
    return docs


def labelled_documents(
    per_category: int = PER_CATEGORY, max_bytes: int = 1 << 18, seed: int = 0, split: Optional[str] = None
) -> List[Document]:
    """The labelled set: real files of every category found here, plus generated documents (see the module
    docstring) for LaTeX, the blob kinds and logs; ``split`` (``"train"`` / ``"heldout"``) keeps that part only
    (:func:`split_of`)."""
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split: expected 'train', 'heldout' or None, got {split!r}")
    docs: List[Document] = []
    for cat in SOURCES:
        docs += _files(cat, per_category, max_bytes)
    other = [d for d in docs if d.category == "prose_other"]
    docs += _catalog_documents(max(0, per_category - len(other)))
    # a third of the English documents (or more, where files are few): the programs' messages, short sentences
    # unlike the licences most English files are
    english = [d for d in docs if d.category == "prose_en"][: per_category - per_category // 3]
    docs = [d for d in docs if d.category != "prose_en"] + english
    docs += _english_catalog_documents(per_category - len(english))
    english = [d.text for d in docs if d.category == "prose_en"]
    docs += generated_documents(per_category, seed=seed, sentences=english)
    seen: set = set()
    unique = []
    for d in docs:  # a file whose content came before (a licence shipped twice): once, so no text is in both halves
        if d.sha256 not in seen:
            seen.add(d.sha256)
            unique.append(d)
    docs = unique
    return docs if split is None else [d for d in docs if d.split == split]


def set_digest(docs: Sequence[Document]) -> str:
    """The SHA-256 of the set: each document's category, key and SHA-256, in order."""
    h = hashlib.sha256()
    for d in docs:
        h.update(f"{d.category}\0{d.key}\0{d.sha256}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- generated kinds


def _sentences(texts: Sequence[str]) -> List[str]:
    out = []
    for t in texts:
        for para in t.split("\n\n"):
            s = " ".join(para.split())
            if 40 <= len(s) <= 400 and not any(ch in s for ch in "\\{}$%&#_^<>"):
                out.append(s)
    return out or ["The result holds for every finite set of samples considered in this section."]


def _latex(rng, sents) -> str:
    envs = ["itemize", "enumerate"]
    parts = ["\\documentclass[11pt]{article}", "\\usepackage{amsmath,amssymb}", "\\usepackage{graphicx}",
             "\\begin{document}", "\\title{" + rng.choice(sents)[:40] + "}", "\\maketitle"]  # fmt: skip
    for s in range(int(rng.integers(3, 7))):
        parts.append(f"\\section{{Part {s + 1}}}\\label{{sec:{s}}}")
        for _ in range(int(rng.integers(2, 5))):
            kind = int(rng.integers(0, 4))
            if kind == 0:
                parts.append(
                    rng.choice(sents) + f" See \\cite{{ref{int(rng.integers(1, 40))}}} and Section~\\ref{{sec:{s}}}."
                )
            elif kind == 1:
                a, b = rng.choice(["x", "y", "\\alpha", "\\beta", "\\theta"], 2)
                parts.append("\\begin{equation}\\label{eq:%d}\n  \\frac{\\partial %s}{\\partial %s} = \\sum_{i=1}^{n} "
                             "\\left( %s_i - \\hat{%s} \\right)^2 \\cdot \\mathbf{w}_i\n\\end{equation}"
                             % (int(rng.integers(100)), a, b, a, b))  # fmt: skip
            elif kind == 2:
                env = envs[int(rng.integers(2))]
                items = "\n".join(
                    f"  \\item {rng.choice(sents)[:80]} $O(n^{int(rng.integers(1, 4))})$" for _ in range(3)
                )
                parts.append(f"\\begin{{{env}}}\n{items}\n\\end{{{env}}}")
            else:
                parts.append("\\begin{figure}[t]\n  \\centering\n  \\includegraphics[width=0.8\\linewidth]{fig%d}\n"
                             "  \\caption{%s}\n\\end{figure}" % (int(rng.integers(9)), rng.choice(sents)[:60]))  # fmt: skip
    parts.append("\\bibliographystyle{plain}\n\\bibliography{refs}\n\\end{document}")
    return "\n\n".join(parts) + "\n"


def _base64(rng) -> str:
    raw = base64.b64encode(rng.bytes(int(rng.integers(1500, 6000)))).decode()
    lines = [raw[i : i + 76] for i in range(0, len(raw), 76)]
    if rng.random() < 0.3:
        lines = ["-----BEGIN CERTIFICATE-----"] + [raw[i : i + 64] for i in range(0, len(raw), 64)]
        lines.append("-----END CERTIFICATE-----")
    return "\n".join(lines) + "\n"


def _hex(rng) -> str:
    raw = rng.bytes(int(rng.integers(800, 3000)))
    kind = int(rng.integers(3))
    if kind == 0:  # xxd -p
        h = raw.hex()
        return "\n".join(h[i : i + 60] for i in range(0, len(h), 60)) + "\n"
    if kind == 1:  # a C byte array
        rows = [", ".join(f"0x{b:02x}" for b in raw[i : i + 12]) + "," for i in range(0, len(raw), 12)]
        return "\n".join("  " + r for r in rows) + "\n"
    rows = [" ".join(f"{b:02x}" for b in raw[i : i + 16]) for i in range(0, len(raw), 16)]
    return "\n".join(rows) + "\n"


def _uuids(rng) -> str:
    return "\n".join(str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(int(rng.integers(40, 200)))) + "\n"


def _hashes(rng, names) -> str:
    algo = ["md5", "sha1", "sha256", "sha512"][int(rng.integers(4))]
    lines = []
    for _ in range(int(rng.integers(30, 120))):
        digest = hashlib.new(algo, rng.bytes(32)).hexdigest()
        lines.append(f"{digest}  {rng.choice(names)}" if rng.random() < 0.7 else digest)
    return "\n".join(lines) + "\n"


_HOSTS = ["web01", "db-2", "gateway", "build-agent-7", "cache"]
_APPS = ["sshd", "nginx", "kernel", "systemd", "cron", "postgres", "app.worker"]
_MSGS = ["Accepted publickey for deploy from 10.0.%d.%d port %d ssh2", "Connection closed by 192.168.%d.%d port %d",
         "Started Session %d of user root (pid %d, uid %d).", "worker %d exited with status %d after %d ms",
         "GET /api/v1/items/%d returned %d in %d ms", "checkpoint complete: wrote %d buffers (%d%%); %d WAL file(s)"]  # fmt: skip
_LEVELS = ["INFO", "WARNING", "ERROR", "DEBUG"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _log(rng) -> str:
    kind = int(rng.integers(4))
    t0 = int(rng.integers(1_600_000_000, 1_700_000_000))
    lines = []
    for i in range(int(rng.integers(40, 160))):
        t = t0 + 7 * i + int(rng.integers(7))
        d = np.datetime64(t, "s").astype(object)
        msg = rng.choice(_MSGS) % tuple(int(x) for x in rng.integers(1, 999, 3))
        app, host = rng.choice(_APPS), rng.choice(_HOSTS)
        if kind == 0:  # RFC 3164
            lines.append(
                f"{_MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S} {host} {app}[{int(rng.integers(100, 9999))}]: {msg}"
            )
        elif kind == 1:  # RFC 5424
            lines.append(f"<{int(rng.integers(0, 191))}>1 {d:%Y-%m-%dT%H:%M:%S}.{int(rng.integers(1000)):03d}Z {host} {app} "
                         f"{int(rng.integers(100, 9999))} ID{int(rng.integers(99))} - {msg}")  # fmt: skip
        elif kind == 2:  # Apache Common Log Format
            lines.append(f"10.{int(rng.integers(256))}.{int(rng.integers(256))}.{int(rng.integers(256))} - - "
                         f"[{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} +0000] \"GET /p/{int(rng.integers(9999))} "
                         f"HTTP/1.1\" {rng.choice([200, 304, 404, 500])} {int(rng.integers(100, 99999))}")  # fmt: skip
        else:  # Python logging: "%(asctime)s %(levelname)s %(name)s: %(message)s"
            lines.append(f"{d:%Y-%m-%d %H:%M:%S},{int(rng.integers(1000)):03d} {rng.choice(_LEVELS)} {app}: {msg}")
    return "\n".join(lines) + "\n"


def generated_documents(n: int, seed: int = 0, sentences: Sequence[str] = ()) -> List[Document]:
    """``n`` seeded documents of each generated kind (see the module docstring)."""
    sents = _sentences(sentences)
    names = [f"src/module_{i}.py" for i in range(30)] + [f"data/part-{i:05d}.bin" for i in range(30)]
    makers: Dict[str, Callable] = {
        "latex": lambda r: _latex(r, sents),
        "base64": _base64,
        "hex": _hex,
        "uuid": _uuids,
        "hash": lambda r: _hashes(r, names),
        "log": _log,
    }
    docs = []
    for k, (cat, make) in enumerate(makers.items()):
        for i in range(n):
            text = make(np.random.default_rng([seed, k, i]))
            name = f"generated:{cat}/{i}"
            docs.append(Document(cat, name, text, hashlib.sha256(text.encode()).hexdigest(), name))
    return docs


# ----------------------------------------------------------------------------------------------- pieces, scores


#: how :func:`pieces` labels a piece: by its document's category, or by its content
LABELS = ("file", "content")
PROSE = ("prose_en", "prose_other")


def content_label(category: str, mask, start: int, piece: str) -> str:
    """The label of ``piece`` (``start``: its byte offset in its document) by its content: prose (the rules'
    ``prose_en`` / ``prose_other``) when every non-space byte lies in a natural-language region of its document
    (``mask``: :func:`mda_fast.data.prose_regions.regions`) and the rules read it as prose; else ``category``."""
    if category in PROSE or mask is None:
        return category
    decided = decide(features(piece))[0]
    if decided not in PROSE:
        return category
    data = piece.encode("utf-8")
    seg = mask[start : start + len(data)]
    if seg.size < len(data):
        return category
    space = np.frombuffer(data, dtype=np.uint8)
    space = (space == 32) | (space == 9) | (space == 10) | (space == 13)
    return decided if bool(np.all(seg | space)) else category


def pieces(docs: Sequence[Document], *, n_bytes: int = 0, tokenizer=None, n_tokens: int = 0, per_doc: int = 2,
           seed: int = 0, labels: str = "file") -> List[tuple]:  # fmt: skip
    """``[(category, piece text, source)]``: ``per_doc`` pieces of each document at seeded offsets, each
    ``n_bytes`` bytes (decoded as the byte tokenizer decodes: bad UTF-8 becomes U+FFFD) or ``n_tokens`` tokens of
    ``tokenizer`` (decoded); a document shorter than a piece gives itself once. ``labels="content"``: a piece that
    lies in a natural-language region of its document and reads as prose is labelled prose
    (:func:`content_label`); ``"file"``: every piece carries its document's category."""
    if labels not in LABELS:
        raise ValueError(f"labels: expected one of {LABELS}, got {labels!r}")
    out = []
    for j, d in enumerate(docs):
        rng = np.random.default_rng([seed, j])
        mask = regions(d.category, d.text) if labels == "content" else None
        label = (lambda start, piece: content_label(d.category, mask, start, piece)) if mask is not None else None
        if n_bytes:
            data = d.text.encode("utf-8")
            if len(data) <= n_bytes:
                out.append((label(0, d.text) if label else d.category, d.text, d.source))
                continue
            for _ in range(per_doc):
                o = int(rng.integers(0, len(data) - n_bytes + 1))
                piece = data[o : o + n_bytes].decode("utf-8", errors="replace")
                out.append((label(o, piece) if label else d.category, piece, d.source))
        else:
            ids = tokenizer.encode(d.text)
            if len(ids) <= n_tokens:
                out.append((label(0, d.text) if label else d.category, d.text, d.source))
                continue
            for _ in range(per_doc):
                o = int(rng.integers(0, len(ids) - n_tokens + 1))
                piece = tokenizer.decode(ids[o : o + n_tokens])
                if label:
                    start = len(tokenizer.decode(ids[:o]).encode("utf-8")) if o else 0
                    out.append((label(start, piece), piece, d.source))
                else:
                    out.append((d.category, piece, d.source))
    return out


def precision_recall(labels: Sequence[str], predicted: Sequence[str], categories: Sequence[str]) -> Dict[str, dict]:
    """Per category: ``{"n" (true pieces), "predicted", "precision", "recall"}`` (``None`` where undefined)."""
    out = {}
    for c in categories:
        tp = sum(1 for y, p in zip(labels, predicted) if y == c and p == c)
        n_true = sum(1 for y in labels if y == c)
        n_pred = sum(1 for p in predicted if p == c)
        out[c] = {
            "n": n_true,
            "predicted": n_pred,
            "precision": tp / n_pred if n_pred else None,
            "recall": tp / n_true if n_true else None,
        }
    return out
