"""The category of a text file, from its name and extension, then its content.

Categories (:data:`CATEGORIES`, the sidecar's column order for a real corpus):

========== ==========================================================================================
``python``  ``.py .pyi .pyx .pxd``, or a ``#!`` line naming python, or Python-looking lines
``code``    other source and build/config code (``.c .cpp .cu .rs .go .js .ts .sh .yaml .toml ...``,
            ``Makefile``, ``Dockerfile``, ``CMakeLists.txt``), or another ``#!`` script
``prose``   Markdown / reST / AsciiDoc / Org (``.md .rst .adoc .org``), or Markdown-looking text
``xml``     XML / HTML / SVG (``.xml .html .htm .svg .xsd ...``), or text starting with ``<?xml``, ``<svg``,
            ``<!DOCTYPE``, ``<html``
``latex``   ``.tex .sty .cls .bib``, or ``\\documentclass`` / ``\\begin{...}`` / ``\\section{``
``json``    ``.json .jsonl .ndjson .geojson .ipynb``, or text that parses as JSON (or JSON lines)
``csv``     ``.csv .tsv``, or >= 3 lines with the same number (>= 1) of commas (or tabs) on each
``base64``  PEM / base64 (``.pem .crt .cer .key .b64 .asc``), a ``-----BEGIN ...-----`` block, or text made only
            of base64 characters in long lines
``log``     ``.log``, or text most of whose lines start with a timestamp or a log level
``text``    ``.txt`` and anything else
========== ==========================================================================================

Rules apply in this order: the user's overrides; the file name (``Makefile``, ...); the extension (lower-cased);
for an unknown or missing extension, content sniffing (in the order of the table: PEM, ``#!``, XML, JSON, LaTeX,
base64, log, CSV, Python, Markdown); otherwise ``text``.

Overrides are a mapping ``{pattern: category}``: a pattern starting with ``.`` is an extension (``".inc"``),
any other is a glob (``fnmatch``, case-sensitive) matched against the file's relative path (POSIX ``/``) and
against its base name (``"vendor/*"``, ``"*.min.js"``, ``"LICENSE"``). The first matching pattern in the mapping's
order wins. The category may be a new name (a new sidecar column) or ``"skip"`` (leave the file out; the manifest
lists it as skipped).
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from typing import Mapping, Optional, Tuple

from ..errors import ConfigError

__all__ = ["CATEGORIES", "SKIP", "classify", "check_overrides", "EXTENSIONS", "NAMES"]

CATEGORIES = ["python", "code", "prose", "xml", "latex", "json", "csv", "base64", "log", "text"]
SKIP = "skip"

_EXT = {
    "python": ".py .pyi .pyx .pxd",
    "code": (
        ".c .h .cc .cpp .cxx .hh .hpp .hxx .cu .cuh .rs .go .java .kt .kts .scala .swift .m .mm .js .mjs .cjs "
        ".jsx .ts .tsx .sh .bash .zsh .fish .ps1 .bat .rb .pl .pm .php .lua .r .jl .hs .ml .mli .fs .cs .vb "
        ".sql .dart .zig .nim .ex .exs .erl .clj .el .vim .f .f90 .asm .s .cmake .mk .gradle .proto .thrift "
        ".yaml .yml .toml .ini .cfg .conf .properties .dockerfile .tf .nix .css .scss .less"
    ),
    "prose": ".md .markdown .mdx .rst .rest .adoc .asciidoc .org",
    "xml": ".xml .html .htm .xhtml .svg .xsd .xsl .xslt .rss .atom .kml .gpx .plist .vue .wsdl",
    "latex": ".tex .sty .cls .bib .ltx .dtx",
    "json": ".json .jsonl .ndjson .geojson .ipynb .jsonc",
    "csv": ".csv .tsv",
    "base64": ".pem .crt .cer .csr .key .pub .b64 .base64 .asc",
    "log": ".log",
    "text": ".txt .text",
}
#: extension (lower case, with the dot) -> category
EXTENSIONS = {e: c for c, es in _EXT.items() for e in es.split()}
#: file base names with a category of their own
NAMES = {
    n: "code"
    for n in (
        "Makefile",
        "GNUmakefile",
        "makefile",
        "Dockerfile",
        "Containerfile",
        "CMakeLists.txt",
        "Jenkinsfile",
        "Vagrantfile",
        "Rakefile",
        "Gemfile",
        "BUILD",
        "WORKSPACE",
        "meson.build",
        "SConstruct",
        "Snakefile",
    )
}

_PEM = re.compile(r"^-----BEGIN [A-Z0-9 ]+-----$", re.M)
_B64_LINE = re.compile(r"^[A-Za-z0-9+/]{16,}={0,2}$")
_TIMESTAMP = re.compile(
    r"^\s*[\[(]?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|\d{2}:\d{2}:\d{2}|"
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d{2}:\d{2}|"
    r"(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL)\b)"
)
_PY_LINE = re.compile(r"^(def \w+\(|class \w+[(:]|import \w|from [\w.]+ import |if __name__ == |@\w+)")
_MD_LINE = re.compile(r"^(#{1,6} \S|```|\* \S|- \S|\d+\. \S|> \S|\[[^\]]+\]\([^)]+\))")
_LATEX = re.compile(r"\\(documentclass|begin\{[a-zA-Z*]+\}|section\*?\{|usepackage)")
_SNIFF = 1 << 16  # characters of a file the content rules look at


def check_overrides(overrides: Optional[Mapping[str, str]], where: str = "overrides") -> dict:
    """The override mapping as a plain ``dict`` of ``str -> str`` (category names: letters, digits, ``_ - .``)."""
    if not overrides:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: expected a mapping of pattern -> category, got {type(overrides).__name__}")
    out = {}
    for k, v in overrides.items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise ConfigError(
                f"{where}: {k!r} = {v!r}: expected a non-empty pattern (a .ext or a glob) mapped to a category name"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ConfigError(f"{where}: {k!r} = {v!r}: expected a category name of letters, digits, _ - .")
        out[k] = v
    return out


def _extension(name: str) -> str:
    base = posixpath.basename(name)
    i = base.rfind(".")
    return base[i:].lower() if i > 0 else ""


def _override(relpath: str, overrides: Mapping[str, str]) -> Optional[Tuple[str, str]]:
    base = posixpath.basename(relpath)
    ext = _extension(relpath)
    for pat, cat in overrides.items():
        if pat.startswith(".") and not any(ch in pat for ch in "*?["):
            if ext == pat.lower():
                return cat, f"override {pat}"
        elif fnmatch.fnmatchcase(relpath, pat) or fnmatch.fnmatchcase(base, pat):
            return cat, f"override {pat}"
    return None


def _is_json(text: str) -> bool:
    s = text.strip()
    if not s or s[0] not in "{[":
        return False
    try:
        json.loads(s)
        return True
    except ValueError:
        pass
    lines = [ln for ln in s.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        for ln in lines[:50]:
            json.loads(ln)
        return True
    except ValueError:
        return False


def _lines(text: str, n: int = 200):
    return [ln for ln in text[:_SNIFF].splitlines()[:n] if ln.strip()]


def sniff(text: str) -> Tuple[str, str]:
    """(category, rule) from the content alone (``text`` if nothing matches)."""
    head = text[:_SNIFF]
    first = head.lstrip("\ufeff \t\r\n")
    lines = _lines(head)
    if _PEM.search(head):
        return "base64", "content: PEM block"
    if first.startswith("#!"):
        shebang = first.split("\n", 1)[0]
        return ("python", "content: #! python") if "python" in shebang else ("code", "content: #! script")
    low = first[:200].lower()
    if low.startswith(("<?xml", "<svg", "<!doctype", "<html", "<rss", "<feed")):
        return "xml", "content: markup"
    if _is_json(text if len(text) <= 8 * _SNIFF else head):
        return "json", "content: JSON"
    if _LATEX.search(head):
        return "latex", "content: LaTeX commands"
    if lines and sum(len(ln.strip()) for ln in lines) >= 64 and all(_B64_LINE.match(ln.strip()) for ln in lines):
        return "base64", "content: base64"
    if len(lines) >= 2 and sum(bool(_TIMESTAMP.match(ln)) for ln in lines) >= 0.6 * len(lines):
        return "log", "content: timestamps / log levels"
    if len(lines) >= 3:
        for sep in (",", "\t"):
            counts = {ln.count(sep) for ln in lines[:50]}
            if len(counts) == 1 and counts.pop() >= 1:
                return "csv", "content: delimited rows"
    if lines and sum(bool(_PY_LINE.match(ln)) for ln in lines) >= max(2, 0.1 * len(lines)):
        return "python", "content: Python statements"
    if lines and sum(bool(_MD_LINE.match(ln)) for ln in lines) >= max(2, 0.2 * len(lines)):
        return "prose", "content: Markdown"
    return "text", "content: plain text"


def classify(relpath: str, text: str, overrides: Optional[Mapping[str, str]] = None) -> Tuple[str, str]:
    """(category, the rule that decided it) of the file at ``relpath`` (POSIX, relative) holding ``text``.

    See the module docstring for the rules and their order; the category is ``"skip"`` when an override says so.
    """
    if overrides:
        hit = _override(relpath, overrides)
        if hit:
            return hit
    base = posixpath.basename(relpath)
    if base in NAMES:
        return NAMES[base], f"name {base}"
    ext = _extension(relpath)
    if ext in EXTENSIONS:
        return EXTENSIONS[ext], f"extension {ext}"
    return sniff(text)
