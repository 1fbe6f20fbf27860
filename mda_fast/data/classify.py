"""The category of a text file: from its name and extension, else from its content (the package's one content
classifier, :mod:`mda_fast.data.content`, which also classifies the document pieces of token rows).

Categories are :data:`mda_fast.data.content.CATEGORIES` (the sidecar's column order for a real corpus). The name
and extension rules:

=============== ================================================================================================
``python``      ``.py .pyi .pyx .pxd``, or a ``#!`` line naming python
``c``           ``.c .h .cc .cpp .cxx .hh .hpp .hxx .cu .cuh``
``javascript``  ``.js .mjs .cjs .jsx .ts .tsx``
``code``        other source and build code (``.rs .go .java .sh .css ...``, ``Makefile``, ``Dockerfile``,
                ``CMakeLists.txt``), or another ``#!`` script
``config``      ``.yaml .yml .toml .ini .cfg .conf .properties``
``markdown``    ``.md .markdown .mdx .rst .rest .adoc .asciidoc .org``
``xml``         ``.xml .html .htm .xhtml .svg .xsd .xsl .xslt .rss .atom .kml .gpx .plist .vue .wsdl``
``latex``       ``.tex .sty .cls .bib .ltx .dtx``
``json``        ``.json .jsonl .ndjson .geojson .ipynb .jsonc``
``table``       ``.csv .tsv``
``base64``      ``.pem .crt .cer .csr .key .pub .b64 .base64 .asc``
``log``         ``.log``
=============== ================================================================================================

Rules apply in this order: the user's overrides; the file name (``Makefile``, ...); the extension (lower-cased);
a ``#!`` line; otherwise the content (:func:`mda_fast.data.content.classify_text`: e.g. ``.txt`` files become
``prose_en``, ``prose_other``, ``log``, ... by what they hold).

Overrides are a mapping ``{pattern: category}``: a pattern starting with ``.`` is an extension (``".inc"``),
any other is a glob (``fnmatch``, case-sensitive) matched against the file's relative path (POSIX ``/``) and
against its base name (``"vendor/*"``, ``"*.min.js"``, ``"LICENSE"``). The first matching pattern in the mapping's
order wins. The category may be a new name (a new sidecar column) or ``"skip"`` (leave the file out; the manifest
lists it as skipped).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from typing import Mapping, Optional, Tuple

from ..errors import ConfigError
from .content import CATEGORIES, classify_text

__all__ = ["CATEGORIES", "SKIP", "classify", "sniff", "check_overrides", "EXTENSIONS", "NAMES"]

SKIP = "skip"

_EXT = {
    "python": ".py .pyi .pyx .pxd",
    "c": ".c .h .cc .cpp .cxx .hh .hpp .hxx .cu .cuh",
    "javascript": ".js .mjs .cjs .jsx .ts .tsx",
    "code": (
        ".rs .go .java .kt .kts .scala .swift .m .mm .sh .bash .zsh .fish .ps1 .bat .rb .pl .pm .php .lua .r .jl "
        ".hs .ml .mli .fs .cs .vb .sql .dart .zig .nim .ex .exs .erl .clj .el .vim .f .f90 .asm .s .cmake .mk "
        ".gradle .proto .thrift .dockerfile .tf .nix .css .scss .less"
    ),
    "config": ".yaml .yml .toml .ini .cfg .conf .properties",
    "markdown": ".md .markdown .mdx .rst .rest .adoc .asciidoc .org",
    "xml": ".xml .html .htm .xhtml .svg .xsd .xsl .xslt .rss .atom .kml .gpx .plist .vue .wsdl",
    "latex": ".tex .sty .cls .bib .ltx .dtx",
    "json": ".json .jsonl .ndjson .geojson .ipynb .jsonc",
    "table": ".csv .tsv",
    "base64": ".pem .crt .cer .csr .key .pub .b64 .base64 .asc",
    "log": ".log",
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


def sniff(text: str) -> Tuple[str, str]:
    """(category, rule) from the content alone: a ``#!`` line, else :func:`mda_fast.data.content.classify_text`."""
    first = text[:256].lstrip("\ufeff \t\r\n")
    if first.startswith("#!"):
        shebang = first.split("\n", 1)[0]
        return ("python", "content: #! python") if "python" in shebang else ("code", "content: #! script")
    cat, rule = classify_text(text)
    return cat, f"content: {rule}"


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
