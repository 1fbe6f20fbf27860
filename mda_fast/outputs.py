"""Atomic writes, JSON and the output lock (``mda_fast.stages.io``)."""

from .stages.io import *  # noqa: F401,F403
from .stages.io import OutputLock, atomic_dir, atomic_file, jsonable, read_json, write_json  # noqa: F401
