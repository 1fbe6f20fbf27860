"""Scoring on several devices (``mda_fast.stages.shards``)."""

from .stages.shards import ShardFailed, launch, merge, parse_devices, parse_shard  # noqa: F401
