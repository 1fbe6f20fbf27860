"""Run configs: one tree of typed dataclasses (``schema``), loaded and validated in full before any work
(``files``). ``load_config`` merges defaults ← ``base`` ← a TOML/JSON file ← ``--set section.key=value`` overrides,
rejects unknown keys, wrong types and out-of-range values with one line naming the key (``ConfigError``), and returns
the ``Config``; ``describe`` renders it with each key's doc (``mda-fast config show``). Checks that need the model or
the data are made by the stages before they start (``mda_fast.stages.checks``).
"""
from .files import (CONFIG_DIR, check_values, describe, fields_for, load_config, make_config, packaged_config,
                    packaged_names, parse_override, read_config_file, resolve_config_arg)
from .schema import (ARMS, DEFAULT_ARMS, DTYPE_NAMES, SECTIONS, AnalyzeSection, Config, CorpusSection, DataSection,
                     FitSection, InterveneSection, LocalizeSection, ModelSection, ReportSection, ScoreSection,
                     TargetsSection, TrainSection, WindowSection, opt)

__all__ = ["ARMS", "CONFIG_DIR", "DEFAULT_ARMS", "DTYPE_NAMES", "SECTIONS", "AnalyzeSection", "Config", "CorpusSection",
           "DataSection", "FitSection", "InterveneSection", "LocalizeSection", "ModelSection", "ReportSection",
           "ScoreSection", "TargetsSection", "TrainSection", "WindowSection", "check_values", "describe", "fields_for",
           "load_config", "make_config", "opt", "packaged_config", "packaged_names", "parse_override",
           "read_config_file", "resolve_config_arg"]
