"""The output directory: its layout, atomic writes, JSON, fingerprints, and the lock that keeps two commands out
of one ``--out``. A leaf module (it imports nothing of the package but ``errors``), so that every writer in the
package can use its atomic writes.

Every file a stage writes appears whole or not at all: ``write_json`` and ``atomic_file`` write a temporary
sibling and ``os.replace`` it; ``atomic_dir`` builds a whole directory beside its final name and swaps it in at
the end, so a failed stage leaves the previous result (or nothing) behind, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
from typing import Any, Iterator

import numpy as np

from .errors import OutputError, StateError

LOCK_NAME = ".mda-fast.lock"

#: ``out/score/``: one memmap per array, rows in window order (``scores`` is ``[n_samples, n_targets]``)
SCORE_ARRAYS = {
    "scores": np.float32,
    "global_index": np.int64,
    "step": np.int64,
    "position": np.int64,
    "loss": np.float32,
}
SCORE_FILES = tuple(SCORE_ARRAYS)


def score_dir(out: str, shard: tuple[int, int] | None = None) -> str:
    """``out/score`` (or ``out/score/shards/i-of-k`` for shard ``(i, k)``)."""
    d = os.path.join(out, "score")
    return d if shard is None else os.path.join(d, "shards", f"{shard[0]}-of-{shard[1]}")


def jsonable(x: Any) -> Any:
    """``x`` with numpy arrays/scalars as lists/numbers and non-finite floats as ``None`` (valid JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def os_error(e: OSError, what: str) -> OutputError:
    """One line for a failed write: read-only or full disk, a path that is a file, permissions."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.ENOTDIR: "a parent path is a file, not a directory",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(e.errno, e.strerror or str(e))
    return OutputError(f"cannot write {what}: {reason}; expected a writable directory with free space")


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only when the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise os_error(e, path) from None
    except BaseException:
        _remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    with atomic_file(path) as fh:
        json.dump(jsonable(obj), fh, indent=1)


def read_json(path: str, what: str | None = None):
    """A JSON file written by a stage; a missing or damaged one is a ``StateError`` naming it."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise StateError(f"{path} not found" + (f": {what}" if what else "")) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StateError(f"{path} is damaged ({e}); re-run the stage that writes it") from None


def load_json_as(path: str, error: type, expected: str, hint: str = ""):
    """A JSON file's content; an unreadable or invalid one raises ``error`` (one line naming the file)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        detail = " ".join(str(e).split())[:200]
        raise error(
            f"{path} is not readable JSON ({type(e).__name__}: {detail}); expected {expected}"
            + (f": {hint}" if hint else "")
        ) from None


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``final``; on success it replaces ``final`` (old content removed),
    on any failure it is deleted and ``final`` is left as it was."""
    parent = os.path.dirname(os.path.abspath(final))
    tmp = os.path.join(parent, f".{os.path.basename(final)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        yield tmp
        old = None
        if os.path.exists(final):
            old = os.path.join(parent, f".{os.path.basename(final)}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OutputError):
            raise
        raise os_error(e, final) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def check_out_dir(out: str) -> None:
    """``--out`` must be a directory or creatable as one (not a file, not under a file, writable)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"--out {out}: is a file; expected a directory (existing or new)")
    probe = out
    while not os.path.exists(probe):
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputError(f"--out {out}: {probe} is a file; expected a directory path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: {probe} is not writable; expected a writable directory")


class OutputLock:
    """An exclusive ``flock`` on ``lock_dir/.mda-fast.lock`` (default ``lock_dir = out``) for one command.

    A second command on the same directory fails at once with ``OutputError`` instead of interleaving writes
    (``score --shard i/k`` locks only its shard's directory, so shards run side by side). Creates the directories
    as needed; when the command fails, a ``--out`` that this command created and left empty is removed again.
    The lock file is removed when the command ends.
    """

    def __init__(self, out: str, lock_dir: str | None = None):
        self.out = out
        self.lock_dir = lock_dir or out
        self.created = False
        self._fh = None
        self._path = os.path.join(self.lock_dir, LOCK_NAME)

    def __enter__(self) -> OutputLock:
        import fcntl

        check_out_dir(self.out)
        try:
            self.created = not os.path.isdir(self.out)
            os.makedirs(self.lock_dir, exist_ok=True)
            self._fh = open(self._path, "a+")
        except OSError as e:
            if self.created:
                remove_if_empty(self.out)
            raise os_error(e, self.out) from None
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            self._fh = None
            raise OutputError(
                f"{self.lock_dir} is in use by another mda-fast command (pid {holder}); wait for it "
                f"to finish or use another --out"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            _remove(self._path)
            self._fh.close()
            self._fh = None
        if exc[0] is not None and self.created:
            remove_if_empty(self.out)


def remove_if_empty(out: str) -> None:
    """Remove ``out`` if it holds nothing but empty directories (a command that failed before writing anything)."""
    try:
        for _, _, files in os.walk(out):
            if files:
                return
        shutil.rmtree(out, ignore_errors=True)
    except OSError:
        pass


def file_digest(path: str, limit: int | None = None) -> str:
    """sha256 of a file (of its first ``limit`` bytes and its size, when ``limit`` is given)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = limit
        while True:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
                if left <= 0:
                    break
    h.update(str(os.path.getsize(path)).encode())
    return h.hexdigest()


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]
