"""Run untrusted (LLM-written) generator code in a locked-down subprocess.

``run_generator(code, seed, n)`` executes ``code`` (which must define ``generate(seed: int, n: int) -> list[str]``)
in a fresh ``python -I`` child and returns the documents it produced, or raises ``SandboxError`` saying why not.

Limits (``SandboxLimits``):

* **no network**: the child runs in its own network namespace (``unshare -rn``, or ``unshare -n`` as root) when the
  system allows it (``network_isolation()`` says which), and in every case an audit hook installed before the
  code runs refuses ``socket.*`` events, process creation (``subprocess``, ``os.system``, ``os.exec*``,
  ``os.fork``, ``os.posix_spawn``), ``ctypes``, file writes and the import of any module not already loaded: the
  child loads a small allowlist of pure modules (``random``, ``math``, ``string``, ``itertools``, ...) first. The environment is emptied (no proxies, no keys).
* **CPU time** (``RLIMIT_CPU``), **address space** (``RLIMIT_AS``), **file size** (``RLIMIT_FSIZE``), **open files**
  (``RLIMIT_NOFILE``), a **wall-clock timeout** (the whole process group is killed), and an **output cap** (stdout
  is read up to ``max_output`` bytes; more kills the child).

The child prints one JSON list of strings; anything else is an error.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

from ..errors import MdaFastError

__all__ = ["SandboxError", "SandboxLimits", "run_generator", "network_isolation", "ALLOWED_IMPORTS"]

ALLOWED_IMPORTS = (
    "random",
    "math",
    "string",
    "itertools",
    "functools",
    "collections",
    "re",
    "json",
    "textwrap",
    "bisect",
    "heapq",
    "operator",
    "statistics",
    "typing",
    "dataclasses",
    "enum",
    "copy",
)


class SandboxError(MdaFastError, RuntimeError):
    """The generated code did not produce valid output within its limits (the message says which limit or error)."""


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    cpu_s: int = 10
    wall_s: float = 20.0
    memory_mb: int = 512
    max_output: int = 4 << 20
    file_mb: int = 1
    open_files: int = 32


_CHILD = r"""
import sys, os, json
_code = open(sys.argv[1]).read()
_seed, _n = int(sys.argv[2]), int(sys.argv[3])
_allowed = set(json.loads(sys.argv[4]))
for _m in _allowed:  # load the allowed modules (and what they need) before the hook; later imports are refused
    try:
        __import__(_m)
    except ImportError:
        pass
_blocked = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn",
            "os.spawn", "os.kill", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
            "os.unlink", "os.truncate", "ctypes.", "shutil.", "urllib.", "http.", "ftplib.", "smtplib.",
            "telnetlib.", "webbrowser.", "sys._getframe", "code.", "os.putenv", "os.unsetenv", "mmap.")
def _hook(event, args):
    if event == "import":  # raised only for modules not yet loaded
        if str(args[0]) not in _allowed:
            raise ImportError(f"sandbox: import of {args[0]!r} is not allowed")
    elif event == "open":
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)):
            raise PermissionError(f"sandbox: writing files is not allowed ({args[0]!r})")
    elif event.startswith(_blocked):
        raise PermissionError(f"sandbox: {event} is not allowed")
sys.addaudithook(_hook)
_ns = {"__name__": "generated"}
exec(compile(_code, "<generated>", "exec"), _ns)
if "generate" not in _ns:
    raise SystemExit("sandbox: the code defines no generate(seed, n)")
_out = _ns["generate"](_seed, _n)
if not isinstance(_out, (list, tuple)) or not all(isinstance(d, str) for d in _out):
    raise SystemExit("sandbox: generate(seed, n) must return a list of str")
sys.stdout.write(json.dumps(list(_out)))
sys.stdout.flush()
"""


@functools.lru_cache(maxsize=1)
def network_isolation() -> Optional[List[str]]:
    """The command prefix that gives the child its own (empty) network namespace, or None where none works."""
    for prefix in (["unshare", "-rn"], ["unshare", "-n"]):
        if shutil.which(prefix[0]) is None:
            return None
        try:
            r = subprocess.run(prefix + ["true"], capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return prefix
    return None


def _limits(lim: SandboxLimits):
    """The child's ``preexec_fn``: a new session and the resource limits of ``lim``."""

    def apply():
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
        mem = lim.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fs = lim.file_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.open_files, lim.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill(proc) -> None:
    """Kill the child's process group and the child (either may be gone already)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _command(work: str, code: str, seed: int, n: int, isolate_network: bool) -> List[str]:
    """Write the code and the child script into ``work``; the child's command line."""
    src = os.path.join(work, "gen.py")
    with open(src, "w") as fh:
        fh.write(code)
    child = os.path.join(work, "child.py")
    with open(child, "w") as fh:
        fh.write(_CHILD)
    prefix = (network_isolation() or []) if isolate_network else []
    return prefix + [
        sys.executable,
        "-I",
        "-S",
        "-B",
        child,
        src,
        str(int(seed)),
        str(int(n)),
        json.dumps(list(ALLOWED_IMPORTS)),
    ]


def _pumps(proc, lim: SandboxLimits) -> tuple:
    """Started reader threads of the child's stdout (capped at ``max_output``: more kills it) and stderr.

    Returns ``(threads, out, err, over)``; ``over[0]`` says whether stdout went past its cap."""
    out, err, over = bytearray(), bytearray(), [False]

    def pump(stream, buf, cap):
        while True:
            block = stream.read(65536)
            if not block:
                return
            if len(buf) + len(block) > cap:
                buf += block[: cap - len(buf)]
                over[0] = stream is proc.stdout or over[0]
                _kill(proc)
                return
            buf += block

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, out, lim.max_output), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err, 1 << 16), daemon=True),
    ]
    for t in threads:
        t.start()
    return threads, out, err, over


def _wait(proc, threads, lim: SandboxLimits) -> None:
    """Wait for the child up to ``wall_s`` (past it: kill the group, ``SandboxError``); join the readers."""
    try:
        proc.wait(timeout=lim.wall_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.wait()
        raise SandboxError(f"generated code ran past the {lim.wall_s:g} s wall-clock limit and was killed") from None
    finally:
        for t in threads:
            t.join(timeout=2)


def _failure(rc: int, err: bytes, lim: SandboxLimits, seconds: float) -> SandboxError:
    """The error of a child that exited with ``rc != 0``: the limit it hit (or its exit code) and its last line."""
    lines = [x.strip() for x in err.decode("utf-8", "replace").splitlines() if x.strip()]
    tail = (lines[-1] if lines else "")[-300:]
    why = {
        -signal.SIGXCPU: f"CPU-time limit ({lim.cpu_s} s)",
        -signal.SIGKILL: "killed",
        -signal.SIGXFSZ: "file-size limit",
    }.get(rc, f"exit code {rc}")
    if "MemoryError" in tail or (lines and lines[-1] == "MemoryError"):
        why = f"memory limit ({lim.memory_mb} MiB)"
    return SandboxError(f"generated code failed ({why}, {seconds:.1f} s): {tail or 'no message'}")


def _documents(out: bytes) -> List[str]:
    """The child's stdout as its list of documents (``SandboxError`` if it is not a JSON list of str)."""
    try:
        docs = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SandboxError(f"generated code printed no valid JSON list of documents ({e})") from None
    if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        raise SandboxError("generated code must return a list of str")
    return docs


def run_generator(
    code: str, seed: int = 0, n: int = 16, limits: Optional[SandboxLimits] = None, isolate_network: bool = True
) -> List[str]:
    """Run ``generate(seed, n)`` from ``code`` in the sandbox (see the module docstring); its list of documents."""
    lim = limits or SandboxLimits()
    work = tempfile.mkdtemp(prefix="mda-sandbox-")
    try:
        cmd = _command(work, code, seed, n, isolate_network)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            env=env,
            preexec_fn=_limits(lim),
            close_fds=True,
        )
        threads, out, err, over = _pumps(proc, lim)
        t0 = time.monotonic()
        _wait(proc, threads, lim)
        if over[0]:
            raise SandboxError(f"generated code wrote more than {lim.max_output} bytes of output and was killed")
        if proc.returncode != 0:
            raise _failure(proc.returncode, err, lim, time.monotonic() - t0)
        return _documents(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
