"""Walking the ``mda-fast corpus`` source trees: candidate files in a deterministic order, what is skipped and why
(hidden, symlinked directories, unreadable, empty, binary, too large)."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from ..errors import DataError


def walk_files(roots: Sequence[str], config, exclude: set) -> Tuple[List[dict], List[dict]]:
    """(candidate files ``{"root", "path", "abs", "size"}``, skipped entries), in build order."""
    files, skipped = [], []
    for ri, root in enumerate(roots):
        if os.path.isfile(root):
            files.append({"root": ri, "path": os.path.basename(root), "abs": root})
            continue
        here: List[dict] = []
        errors: List[OSError] = []
        for d, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
            rel_d = os.path.relpath(d, root)
            rel_d = "" if rel_d == "." else rel_d.replace(os.sep, "/") + "/"
            keep = []
            for name in sorted(dirnames):
                full = os.path.join(d, name)
                if name.startswith(".") and not config.include_hidden:
                    skipped.append({"root": ri, "path": rel_d + name + "/", "reason": "hidden"})
                elif os.path.islink(full):
                    skipped.append(
                        {"root": ri, "path": rel_d + name + "/", "reason": "symlinked directory (not followed)"}
                    )
                else:
                    keep.append(name)
            dirnames[:] = keep
            for name in sorted(filenames):
                full = os.path.join(d, name)
                rec = {"root": ri, "path": rel_d + name, "abs": full}
                if name.startswith(".") and not config.include_hidden:
                    skipped.append({**public_record(rec), "reason": "hidden"})
                elif os.path.realpath(full) in exclude:
                    continue  # this build's own (previous) outputs: not read, not listed (a rebuild is identical)
                else:
                    here.append(rec)
        for e in errors:
            where = os.path.relpath(e.filename, root).replace(os.sep, "/") if e.filename else "."
            if where == ".":
                raise DataError(
                    f"--from {root}: cannot read the directory ({e.strerror or e}); expected a readable directory"
                )
            skipped.append({"root": ri, "path": where + "/", "reason": f"unreadable ({e.strerror or e})"})
        here.sort(key=lambda r: r["path"].encode("utf-8", "surrogateescape"))
        files.extend(here)
    skipped.sort(key=lambda r: (r["root"], r["path"].encode("utf-8", "surrogateescape")))
    return files, skipped


def public_record(rec: dict) -> dict:
    return {"root": rec["root"], "path": rec["path"]}


def read_text_file(rec: dict, config) -> Tuple[Optional[bytes], Optional[str], Optional[str]]:
    """(bytes, text, None) of a usable file, or (None, None, reason)."""
    try:
        if config.max_file_bytes and os.path.getsize(rec["abs"]) > config.max_file_bytes:
            return None, None, f"larger than max_file_bytes ({config.max_file_bytes})"
        with open(rec["abs"], "rb") as fh:
            data = fh.read()
    except OSError as e:
        return None, None, f"unreadable ({e.strerror or e})"
    if not data:
        return None, None, "empty"
    if b"\x00" in data:
        return None, None, "binary (NUL bytes)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, None, f"binary (not UTF-8 at byte {e.start})"
    return data, text, None
