"""Run untrusted (LLM-written) generator code in a locked-down subprocess.

``run_generator(code, seed, n)`` executes ``code`` (which must define ``generate(seed: int, n: int) -> list[str]``)
in a fresh ``python -I`` child and returns the documents it produced, or raises ``SandboxError`` saying why not.

Limits (``SandboxLimits``):

* **no network**: the child runs in its own network namespace (``unshare -rn``, or ``unshare -n`` as root) when the
  system allows it (``network_isolation()`` says which).
* **no files, no processes, no new modules**: the child first loads a small allowlist of pure modules (``random``,
  ``math``, ``string``, ``itertools``, ...), then installs an audit hook that refuses opening any file (reading as
  well as writing: a generator needs no file, and what it read would end up in training rows and the report),
  listing folders, ``socket.*`` events, process creation (``subprocess``, ``os.system``, ``os.exec*``,
  ``os.fork``, ``os.posix_spawn``), ``ctypes``, ``gc``, ``marshal``, new code objects, tracing, and the import of
  any module not already loaded. Creating built-in or extension modules through ``_imp`` (which raises no audit
  event: ``pwd`` reads ``/etc/passwd`` through libc) is refused, inherited descriptors are closed, and the hook
  cannot be taken apart from Python (it reads no global or builtin name and its code and defaults cannot be
  replaced). File metadata (``os.stat``, ``os.readlink``) is not audited by Python and stays readable. The
  environment is emptied (no proxies, no keys).
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
for _m in __ALLOWED__:  # load the allowed modules (and what they need) before the hook; later imports are refused
    try:
        __import__(_m)
    except ImportError:
        pass
# Module creation that raises no audit event (a built-in module such as pwd, which reads /etc/passwd through libc):
# refuse it at its source; the originals are dropped with the module's references to them.
import _imp
def _no_module(*args, **kwargs):
    raise ImportError("sandbox: creating modules is not allowed")
for _f in ("create_builtin", "exec_builtin", "create_dynamic", "exec_dynamic"):
    setattr(_imp, _f, _no_module)
import linecache
linecache.clearcache()
os.closerange(3, 1 << 16)  # no inherited descriptor to read from
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# The hook reads no global or builtin name (a generator could rebind those) and calls no code of the generator: its
# sets and tuples are constants of its code, the names it needs are bound as positional defaults, replacing a
# function's __code__ or __defaults__ is refused, and it compares only exact str and int (a str subclass could
# compare equal to an allowed module name). Once installed it is referenced only by the interpreter.
def _hook(event, args, _type=type, _str=str, _int=int, _PE=PermissionError, _IE=ImportError, _w=_WRITE):
    if event == "import":
        if _type(args[0]) is not _str or args[0] not in __ALLOWED__:
            raise _IE("sandbox: import of %r is not allowed" % (args[0] if _type(args[0]) is _str else "?",))
    elif event == "open":
        path = args[0] if _type(args[0]) is _str else "a descriptor or path object"
        mode, flags = args[1], args[2]
        if (_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
                _type(flags) is _int and flags & _w):
            raise _PE("sandbox: writing files is not allowed (%r)" % (path,))
        raise _PE("sandbox: reading files is not allowed (%r)" % (path,))
    elif event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty",
                           "os.posix_spawn", "os.spawn", "os.kill", "os.remove", "os.rename", "os.rmdir",
                           "os.mkdir", "os.chmod", "os.lchmod", "os.chown", "os.lchown", "os.unlink",
                           "os.truncate", "os.link", "os.symlink", "os.utime", "os.mkfifo", "os.mknod",
                           "os.chflags", "os.chroot", "os.listdir", "os.scandir", "os.fwalk", "os.walk",
                           "os.getxattr", "os.listxattr", "os.setxattr", "os.removexattr", "glob.",
                           "ctypes.", "shutil.", "urllib.", "http.", "ftplib.", "smtplib.", "telnetlib.",
                           "webbrowser.", "code.", "os.putenv", "os.unsetenv", "mmap.", "gc.", "marshal.",
                           "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
                           "sys.addaudithook", "cpython.", "resource.", "fcntl.", "pty.", "tempfile.",
                           "sqlite3.", "pdb.")):
        raise _PE("sandbox: %s is not allowed" % (event,))
    elif event in ("object.__setattr__", "object.__delattr__") and _type(args[1]) is _str and (
            args[1] in ("__code__", "__defaults__", "__kwdefaults__", "__globals__", "__builtins__")):
        raise _PE("sandbox: changing a function's %s is not allowed" % (args[1],))
sys.addaudithook(_hook)
del _hook, _no_module, _imp, _f
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


def _allowed_literal() -> str:
    """The allowlist as a set display of str constants (compiled into a frozenset constant of the hook's code)."""
    return "{" + ", ".join(repr(str(m)) for m in ALLOWED_IMPORTS) + "}"


def _command(work: str, code: str, seed: int, n: int, isolate_network: bool) -> List[str]:
    """Write the code and the child script into ``work``; the child's command line."""
    src = os.path.join(work, "gen.py")
    with open(src, "w") as fh:
        fh.write(code)
    child = os.path.join(work, "child.py")
    with open(child, "w") as fh:
        fh.write(_CHILD.replace("__ALLOWED__", _allowed_literal()))
    prefix = (network_isolation() or []) if isolate_network else []
    return prefix + [sys.executable, "-I", "-S", "-B", child, src, str(int(seed)), str(int(n))]


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
