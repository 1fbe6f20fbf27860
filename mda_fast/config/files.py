"""Loading a run config: defaults ← a base dict ← a TOML/JSON file ← ``--set`` overrides, validated in full;
packaged configs by name; ``describe`` for ``mda-fast config show``."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional

from ..errors import ConfigError
from .schema import SECTIONS, TYPE_NAMES, Config, sections, type_ok

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _merge(cfg: Config, src: dict, origin: str) -> None:
    if not isinstance(src, dict):
        raise ConfigError(f"{origin}: expected a table of sections, got {type(src).__name__}")
    for sname, values in src.items():
        if sname not in SECTIONS:
            raise ConfigError(f"unknown config key {sname!r} ({origin}); known sections: {sorted(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config {sname!r} must be a table (section), got {values!r} ({origin})")
        sec = getattr(cfg, sname)
        fields = {f.name: f for f in dataclasses.fields(sec)}
        for k, v in values.items():
            key = f"{sname}.{k}"
            if k not in fields:
                raise ConfigError(f"unknown config key {key!r} ({origin}); known keys here: {sorted(fields)}")
            f = fields[k]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kind = f.metadata.get("kind")
            if not type_ok(v, default, kind):
                want = TYPE_NAMES.get(kind) or type(default).__name__
                raise ConfigError(f"config {key!r} must be {want}, got {v!r} ({origin})")
            if type(default) is float and kind is None:
                v = float(v)
            setattr(sec, k, v)


def parse_override(item: str) -> dict:
    """``section.key=value`` (value in TOML syntax; a bare word is a string) → ``{section: {key: value}}``."""
    key, sep, value = item.partition("=")
    if not sep or key.count(".") != 1 or not all(key.split(".")):
        raise ConfigError(f"--set {item!r}: expected section.key=value (TOML value, e.g. window.start_step=5)")
    section, name = (x.strip() for x in key.split("."))
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return {section: {name: parsed}}


def read_config_file(path: str) -> dict:
    """The nested dict of a TOML or JSON config file (one clear error for a missing, unreadable or bad file)."""
    if os.path.isdir(path):
        raise ConfigError(
            f"--config {path}: is a directory; expected a TOML or JSON config file "
            f"(or a packaged config name: {packaged_names()})"
        )
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read ({e.strerror})") from None
    is_json = path.endswith(".json")
    try:
        return json.loads(raw) if is_json else tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid {'JSON' if is_json else 'TOML'}: {e}") from None


def load_config(path: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Defaults ← ``base`` ← config file ``path`` ← ``overrides``, validated in full (``ConfigError`` otherwise)."""
    cfg = Config()
    if base:
        _merge(cfg, base, "base config")
    if path:
        _merge(cfg, read_config_file(path), path)
    for item in overrides or []:
        _merge(cfg, parse_override(item), f"--set {item}")
    cfg.validate()
    return cfg


def packaged_names() -> list:
    return sorted(n[:-5] for n in os.listdir(CONFIG_DIR) if n.endswith(".toml"))


def packaged_config(name: str) -> str:
    path = os.path.join(CONFIG_DIR, name if name.endswith(".toml") else name + ".toml")
    if not os.path.exists(path):
        raise ConfigError(f"no packaged config {name!r}; available: {packaged_names()} (or give a file path)")
    return path


def resolve_config_arg(arg: str | None) -> str | None:
    """``--config`` as given: an existing path, else a packaged config name."""
    if arg and not os.path.exists(arg) and os.sep not in arg and not arg.endswith((".toml", ".json")):
        return packaged_config(arg)
    return arg


def describe(cfg: Config) -> str:
    """The resolved config as TOML, each key with its doc and allowed values."""
    lines = []
    for sname, sec in sections(cfg):
        lines += ["", f"[{sname}]  # {type(sec).__doc__.strip()}"]
        for f in dataclasses.fields(sec):
            m = f.metadata
            allowed = f" (one of {list(m['choices'])})" if m.get("choices") else ""
            rng = " ".join(
                f"{sym} {m[k]}"
                for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                if m.get(k) is not None
            )
            lines.append(
                f"{f.name} = {_toml(getattr(sec, f.name))}  # {m['doc']}{allowed}" + (f" [{rng}]" if rng else "")
            )
    return "\n".join(lines).lstrip("\n")


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def check_values(cfg: Config) -> None:
    """Re-run every value check (after a stage changed the config in place)."""
    cfg.validate()


def fields_for(cls, section, **extra) -> dict:
    """Keyword arguments for dataclass ``cls`` from the same-named fields of a config ``section``, plus ``extra``."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name in names}
    kw.update(extra)
    return kw


def make_config(d: Optional[dict] = None) -> Config:
    """A validated ``Config`` from a nested dict (e.g. a ``config.resolved.json``)."""
    return load_config(base=d)
