"""Process groups under ``torchrun`` (or any launcher that sets its environment), with a one-process fallback.

``Dist.from_env()`` reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``, which
``torch.distributed`` reads itself). Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) it is a no-op group of one
process: every collective returns at once, so the stages run the same code either way.

Two process groups: the *control* group is always gloo (CPU) and carries the small objects (status, top-k
candidate lists, targets); the *data* group carries the tensors (the EK-FAC covariances and eigenvalues): nccl
when every rank has its own GPU, gloo otherwise (CPU, or several ranks sharing one GPU, which NCCL refuses).
``MDA_FAST_DIST_BACKEND`` (``gloo`` or ``nccl``) overrides the data group's backend.

Errors do not leave ranks waiting: the stages wrap each phase in ``together(what)``. A rank that raises inside it
still joins the phase's closing status exchange, so every rank learns at the same point that rank r failed, and
all of them raise :class:`RankFailed` naming that rank, its message and its log. Every collective of ``Dist``
(``sum_``, ``broadcast_``, ``gather``) starts with the same status exchange, so a rank that failed in the middle
of a phase is met at the next collective. A rank killed outright is seen by torchrun's agent, which stops the
others (and restarts the group if ``--max-restarts`` allows); ``MDA_FAST_DIST_TIMEOUT`` (seconds, default 1800)
bounds every collective for launchers without such an agent.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from typing import Any, Iterator

import torch

from .errors import MdaFastError, one_line

TIMEOUT_ENV = "MDA_FAST_DIST_TIMEOUT"
BACKEND_ENV = "MDA_FAST_DIST_BACKEND"
DEVICES_ENV = "MDA_FAST_DEVICES"  # the --devices launcher: the device of each local rank, comma-separated
LOG_ENV = "MDA_FAST_RANK_LOG"  # the --devices launcher: each rank writes its output to this file ({rank})
LAUNCHER_LOCK_ENV = "MDA_FAST_LAUNCHER_LOCK"  # the --devices launcher holds the --out lock for its ranks


class RankFailed(MdaFastError, RuntimeError):
    """Another rank (or this one) failed in a phase every rank takes part in; the message names the rank."""


def restarted() -> bool:
    """True in a worker that torchrun restarted after a failure (``TORCHELASTIC_RESTART_COUNT`` > 0)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


class Dist:
    """This process's place in the job: ``rank``, ``world``, ``local_rank``, and the collectives the stages use."""

    def __init__(
        self,
        rank: int = 0,
        world: int = 1,
        local_rank: int = 0,
        ctrl=None,
        data=None,
        data_device: str = "cpu",
        log: str | None = None,
    ):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._ctrl, self._data, self._data_device = ctrl, data, data_device
        self.log = log

    # ------------------------------------------------------------------ set up
    @classmethod
    def from_env(cls, device: str | torch.device | None = None) -> Dist:
        """Join the job torchrun describes (or return the one-process group). ``device``: this rank's device
        (``rank_device``); CUDA devices get the nccl data group unless two local ranks share one."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        log = os.environ.get(LOG_ENV, "").replace("{rank}", str(rank)) or None
        if world <= 1:
            return cls(log=log)
        import torch.distributed as td

        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        dev = torch.device(device) if device is not None else torch.device("cpu")
        backend = os.environ.get(BACKEND_ENV) or ("nccl" if dev.type == "cuda" and not _shared_gpu() else "gloo")
        if backend not in ("gloo", "nccl"):
            raise MdaFastError(f"{BACKEND_ENV}={backend!r}: expected gloo or nccl")
        if not td.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            # torchrun's agent keeps one store over restarts: a prefix per attempt keeps a restarted group from
            # reading the dead attempt's gloo addresses (it would wait for them until the timeout)
            store, _, _ = next(td.rendezvous("env://", rank, world, timeout=timeout))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = td.PrefixStore(f"mda-fast/attempt-{attempt}", store)
            td.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
        ctrl = td.group.WORLD
        data = ctrl if backend == "gloo" else td.new_group(backend="nccl", timeout=timeout)
        return cls(
            rank, world, local, ctrl=ctrl, data=data, data_device=str(dev) if backend == "nccl" else "cpu", log=log
        )

    def close(self, clean: bool = True, destroy: bool = True) -> None:
        """Leave the job. ``clean`` (every rank got here without an error): meet the others first, so no rank
        tears its connections down while a peer still talks to it. ``destroy``: destroy the groups (a process
        that ends right after with ``os._exit``, as the command line's torchrun workers do, need not)."""
        if self.world > 1:
            import torch.distributed as td

            if td.is_initialized():
                if clean:
                    with contextlib.suppress(Exception):
                        self._status(None, "close")
                if destroy:
                    td.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def who(self, rank: int | None = None) -> str:
        r = self.rank if rank is None else rank
        return f"rank {r}/{self.world}"

    # ------------------------------------------------------------------ errors
    def _status(self, error: BaseException | None, what: str) -> None:
        """Exchange (ok | message) with every rank; raise ``RankFailed`` on all of them if any failed."""
        if self.world <= 1:
            return
        import torch.distributed as td

        mine = None if error is None else {"error": _describe(error), "log": self.log}
        got: list = [None] * self.world
        td.all_gather_object(got, mine, group=self._ctrl)
        bad = [(r, g) for r, g in enumerate(got) if g is not None]
        if bad:
            r, g = bad[0]
            where = f"; its log: {g['log']}" if g.get("log") else ""
            more = f" (and ranks {[b[0] for b in bad[1:]]})" if len(bad) > 1 else ""
            raise RankFailed(f"{what}: rank {r} of {self.world} failed{more}: {g['error']}{where}")

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run a phase on every rank; when it ends, every rank knows whether all of them succeeded (see the
        module docstring). The error raised on a failing rank is its own (re-raised unchanged)."""
        try:
            yield
        except RankFailed:
            raise  # met at a collective inside the phase: the others have already been told
        except BaseException as e:
            if self.world > 1 and not getattr(e, "_mda_fast_told", False):
                with contextlib.suppress(Exception):
                    e._mda_fast_told = True  # an enclosing phase must not tell the others again
                with contextlib.suppress(Exception):
                    self._status(e, what)
            raise
        self._status(None, what)

    def barrier(self, what: str = "barrier") -> None:
        self._status(None, what)

    # ------------------------------------------------------------------ collectives
    def sum_(self, tensors: dict, what: str = "reduce") -> None:
        """All-reduce (sum) every tensor of ``tensors`` in place (float64 and float32 keep their dtype)."""
        self._collective(tensors, what, broadcast=False)

    def broadcast_(self, tensors: dict, what: str = "broadcast") -> None:
        """Replace every tensor of ``tensors`` in place by rank 0's."""
        self._collective(tensors, what, broadcast=True)

    def _collective(self, tensors: dict, what: str, broadcast: bool) -> None:
        if self.world <= 1:
            return
        import torch.distributed as td

        self._status(None, what)
        for key in sorted(tensors):
            t = tensors[key]
            buf = t.to(self._data_device).contiguous()
            if broadcast:
                td.broadcast(buf, src=0, group=self._data)
            else:
                td.all_reduce(buf, op=td.ReduceOp.SUM, group=self._data)
            if buf is not t:
                t.copy_(buf)

    def gather(self, obj: Any, what: str = "gather") -> list | None:
        """Every rank's ``obj`` on rank 0 (a list in rank order); ``None`` on the other ranks."""
        if self.world <= 1:
            return [obj]
        import torch.distributed as td

        self._status(None, what)
        got = [None] * self.world if self.is_main else None
        td.gather_object(obj, got, dst=0, group=self._ctrl)
        return got

    def share(self, obj: Any, what: str = "share") -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world <= 1:
            return obj
        import torch.distributed as td

        self._status(None, what)
        box = [obj if self.is_main else None]
        td.broadcast_object_list(box, src=0, group=self._ctrl)
        return box[0]


def rank_device(device: str, local_rank: int) -> str:
    """This rank's device for ``model.device``: the launcher's list (``MDA_FAST_DEVICES``) if set, else
    ``cuda:LOCAL_RANK`` for ``cuda``/``auto`` with GPUs, else ``device`` unchanged (``cpu``, ``cuda:3``)."""
    listed = [d.strip() for d in os.environ.get(DEVICES_ENV, "").split(",") if d.strip()]
    if listed:
        return listed[local_rank % len(listed)]
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return device


def _shared_gpu() -> bool:
    listed = [d.strip() for d in os.environ.get(DEVICES_ENV, "").split(",") if d.strip()]
    return len(listed) != len(set(listed))


def _describe(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"{type(e).__name__}: {one_line(e)}" if not isinstance(e, MdaFastError) else one_line(e)


def redirect_output(path: str) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to the end of ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


_chunks_done = 0


def fault_point(shard) -> None:
    """Test hook, called after each finished chunk of ``score``: with ``MDA_FAST_TEST_DIE_AFTER_CHUNKS=n`` (and
    ``MDA_FAST_TEST_DIE_RANK=r``, default 1), the scoring process of shard r kills itself with SIGKILL after its
    n-th chunk, in the first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), as if the machine had lost it."""
    global _chunks_done
    n = os.environ.get("MDA_FAST_TEST_DIE_AFTER_CHUNKS")
    if not n or restarted() or shard is None or shard[0] != int(os.environ.get("MDA_FAST_TEST_DIE_RANK", "1")):
        return
    _chunks_done += 1
    if _chunks_done >= int(n):
        import signal

        sys.stdout.flush()
        mark = os.environ.get("MDA_FAST_TEST_DIE_MARK")
        if mark:  # proof for the test that the kill happened, whichever rank torchrun then reports
            with open(mark, "w") as fh:
                fh.write(str(_chunks_done))
        os.kill(os.getpid(), signal.SIGKILL)
