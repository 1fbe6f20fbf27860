"""Real text that ships with the interpreter and the installed packages, as a reproducible corpus source.

A *source* is a named set of files under a root resolved at run time: ``stdlib`` (``sysconfig.get_paths()
["stdlib"]``, the running interpreter's standard library, versioned by the Python version) or ``pkg:NAME`` (the
installed distribution's import directory, versioned by ``importlib.metadata.version(NAME)``), one or more
sub-directories under it, and ``fnmatch`` patterns on the base name. :data:`SOURCES` defines them; a study
chooses some and caps each at a number of bytes (``study.sources = {name = max_bytes}``).

Selection is deterministic: every candidate file (text only: no NUL byte, valid UTF-8, non-empty; no
``__pycache__``, ``site-packages`` or hidden entries) is ordered by the SHA-256 of its relative path (an even,
path-independent spread over the tree rather than its alphabetically first sub-directory) and taken while the
source's byte total stays within its cap. The chosen files are copied to ``DIR/<source>/<relative path>`` (a
snapshot of exactly what went in) and :func:`snapshot_sources` returns the record the corpus manifest keeps:
each source's root kind, distribution and version, the sub-directories and patterns, its cap, the number of
candidates and chosen files, their bytes and the SHA-256 of every chosen file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import platform
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError, DataError

__all__ = ["Source", "SOURCES", "resolve_root", "select_files", "snapshot_sources", "environment_versions"]


@dataclass(frozen=True)
class Source:
    """Files ``root/<under>/**/<pattern>`` (see the module docstring)."""

    name: str
    root: str  # "stdlib" or "pkg:<distribution>"
    under: Tuple[str, ...]  # sub-directories of the root ("" = the root itself)
    patterns: Tuple[str, ...]  # fnmatch patterns on the base name
    exclude: Tuple[str, ...] = ()  # fnmatch patterns on the relative path (POSIX) to leave out
    doc: str = ""


SOURCES: Dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "stdlib-python",
            "stdlib",
            ("",),
            ("*.py",),
            ("test/*", "idlelib/idle_test/*", "lib2to3/tests/*", "_sysconfigdata*", "pydoc_data/*"),
            "the standard library's Python modules (no tests)",
        ),
        Source("stdlib-tests-python", "stdlib", ("test",), ("*.py",), (), "the standard library's test modules"),
        Source(
            "stdlib-decimal",
            "stdlib",
            ("test/decimaltestdata",),
            ("*.decTest",),
            (),
            "the General Decimal Arithmetic test vectors (line-oriented text)",
        ),
        Source(
            "stdlib-xml",
            "stdlib",
            ("test",),
            ("*.xml", "*.html", "*.xsd", "*.dtd"),
            (),
            "XML and HTML test data of the standard library",
        ),
        Source(
            "stdlib-pem",
            "stdlib",
            ("test",),
            ("*.pem", "*.crt"),
            (),
            "PEM certificates and keys of the ssl tests (base64)",
        ),
        Source(
            "stdlib-text",
            "stdlib",
            ("test", "lib2to3", "idlelib"),
            ("*.txt", "*.def"),
            ("test/decimaltestdata/*",),
            "text files: test cases, grammars, IDLE's help and config, e-mail messages",
        ),
        Source("stdlib-data", "stdlib", ("test",), ("*.json", "*.toml"), (), "JSON and TOML test data"),
        Source(
            "pip-cacert",
            "pkg:pip",
            ("_vendor/certifi",),
            ("cacert.pem",),
            (),
            "the CA bundle vendored in pip (the venv's, from the interpreter's ensurepip)",
        ),
        Source(
            "numpy-csv",
            "pkg:numpy",
            ("_core/tests/data", "random/tests/data"),
            ("*.csv",),
            (),
            "numpy's umath validation sets and bit-generator test vectors (CSV)",
        ),
        Source(
            "matplotlib-data",
            "pkg:matplotlib",
            ("mpl-data",),
            ("*.afm", "*.svg", "*.csv", "*.mplstyle", "matplotlibrc", "*.txt"),
            (),
            "matplotlib's fonts' metrics (AFM), SVG icons, sample CSV data and style sheets",
        ),
    ]
}


def _dist_dir(dist: str) -> Tuple[str, str]:
    """(import directory, version) of installed distribution ``dist``."""
    import importlib.metadata as md
    import importlib.util

    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        raise DataError(
            f"source pkg:{dist}: the distribution {dist!r} is not installed; expected it from "
            f"scripts/setup.sh (or leave the source out of study.sources)"
        ) from None
    spec = importlib.util.find_spec(dist)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"source pkg:{dist}: no importable package {dist!r}")
    return list(spec.submodule_search_locations)[0], version


def resolve_root(root: str) -> Tuple[str, str, str]:
    """(directory, distribution name, version) of a source root."""
    if root == "stdlib":
        return sysconfig.get_paths()["stdlib"], "python", platform.python_version()
    if root.startswith("pkg:"):
        d, v = _dist_dir(root[4:])
        return d, root[4:], v
    raise ConfigError(f"source root {root!r}: expected 'stdlib' or 'pkg:<distribution>'")


def _is_text(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data or b"\x00" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


def _candidates(src: Source, base: str) -> List[Tuple[str, str]]:
    """(relative POSIX path under ``base``, absolute path) of every matching file, deduplicated, sorted."""
    found: Dict[str, str] = {}
    for sub in src.under:
        top = os.path.join(base, sub) if sub else base
        if not os.path.isdir(top):
            continue
        for d, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(
                x for x in dirnames if not x.startswith(".") and x not in ("__pycache__", "site-packages")
            )
            for name in sorted(filenames):
                if name.startswith(".") or not any(fnmatch.fnmatchcase(name, p) for p in src.patterns):
                    continue
                full = os.path.join(d, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, base).replace(os.sep, "/")
                if any(fnmatch.fnmatchcase(rel, p) for p in src.exclude):
                    continue
                found[rel] = full
    return sorted(found.items())


def select_files(src: Source, max_bytes: int, max_file_bytes: int = 0) -> dict:
    """The chosen files of ``src`` within ``max_bytes`` (see the module docstring), with the source's record."""
    base, dist, version = resolve_root(src.root)
    cands = _candidates(src, base)
    order = sorted(cands, key=lambda rp: hashlib.sha256(rp[0].encode("utf-8", "surrogateescape")).hexdigest())
    chosen, total = [], 0
    for rel, full in order:
        data = _is_text(full)
        if data is None or (max_file_bytes and len(data) > max_file_bytes):
            continue
        if total + len(data) > max_bytes:
            continue
        chosen.append({"path": rel, "abs": full, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        total += len(data)
    chosen.sort(key=lambda r: r["path"].encode("utf-8", "surrogateescape"))
    return {
        "name": src.name,
        "root": src.root,
        "distribution": dist,
        "version": version,
        "under": list(src.under),
        "patterns": list(src.patterns),
        "exclude": list(src.exclude),
        "max_bytes": int(max_bytes),
        "n_candidates": len(cands),
        "n_files": len(chosen),
        "bytes": total,
        "files": chosen,
    }


def environment_versions(dists: Sequence[str] = ()) -> dict:
    """Python's version and implementation, and the version of each distribution in ``dists`` (None: absent)."""
    import importlib.metadata as md

    out = {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
    for d in sorted(set(dists)):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    return out


def snapshot_sources(caps: Mapping[str, int], out_dir: str, max_file_bytes: int = 0) -> List[dict]:
    """Copy the chosen files of each source in ``caps`` (name -> max bytes, in that order) to
    ``out_dir/<name>/...``; returns the per-source records (file ``abs`` paths dropped, hashes kept).
    A file whose bytes change while copied is an error."""
    unknown = [n for n in caps if n not in SOURCES]
    if unknown:
        raise ConfigError(f"study.sources: unknown source(s) {unknown}; expected names from {sorted(SOURCES)}")
    if not caps:
        raise ConfigError(f"study.sources is empty: expected name = max_bytes entries from {sorted(SOURCES)}")
    records = []
    for name, cap in caps.items():
        if not isinstance(cap, (int, float)) or cap <= 0:
            raise ConfigError(f"study.sources.{name} = {cap!r}: expected a positive number of bytes")
        rec = select_files(SOURCES[name], int(cap), max_file_bytes)
        if not rec["files"]:
            raise DataError(
                f"source {name}: no text file of {rec['root']} {rec['under']} matching "
                f"{rec['patterns']} fits {int(cap)} bytes ({rec['n_candidates']} candidates)"
            )
        for f in rec["files"]:
            dst = os.path.join(out_dir, name, *f["path"].split("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(f.pop("abs"), dst)
            with open(dst, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != f["sha256"]:
                    raise DataError(f"source {name}: {f['path']} changed while it was copied")
        records.append(rec)
    return records
