"""Trainer configs: dataclasses whose fields carry `metadata={"help": ...}` (the help text is the docs).

One mechanism for every stage (rollout, sft, ppo, loop):

    cfg = load_config(SFTConfig, file=Path("sft.toml"), overrides={"lr": 1e-4}, section="sft")
    for warning in cfg.validate(): ...   # CLI prints "Warning: ..."; unsupported values raise ConfigError

- a TOML (`.toml`) or YAML (`.yaml`/`.yml`) file sets defaults; with `section`, a table of that name is used
  when the file has one (so one `ares.toml` can hold `[rollout]`, `[sft]`, `[ppo]` tables; a plain setting
  outside that table is an error rather than silently unused);
- `overrides` are the CLI flags the user gave (None values are ignored, so flags default to None);
- an unknown key is a ConfigError naming the key and the file; values are checked against the field types.

Validation follows one rule: correct -> silent; probably a mistake -> a warning saying how to fix it
(returned by `validate()`); unsupported -> ConfigError saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from ares_data.errors import ConfigError

C = TypeVar("C", bound="BaseConfig")


def opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses/argparse naming
    """A config field with help text."""
    return field(default=default, metadata={"help": help})


def field_help(cls: type, name: str) -> str:
    """The help text of a config field (for `typer.Option(help=...)`)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


@dataclass
class BaseConfig:
    """Base of all trainer configs: `validate()` returns warnings and raises ConfigError when unsupported."""

    def validate(self) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class LoraOptions:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str = "all-linear"  # "all-linear" or comma-separated module names

    def targets(self) -> str | list[str]:
        t = self.target_modules.strip()
        return t if t == "all-linear" else [m.strip() for m in t.split(",") if m.strip()]


@dataclass
class LoraFields(BaseConfig):
    """LoRA options shared by every training stage."""

    lora_r: int = opt(0, "LoRA rank; 0 trains all weights (no LoRA).")
    lora_alpha: int = opt(16, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA branch.")
    lora_target_modules: str = opt("all-linear", "Modules to adapt: 'all-linear' or comma-separated names "
                                   "(e.g. 'q_proj,v_proj').")
    merge: bool = opt(False, "With LoRA: also write the adapter merged into the base weights "
                      "(OUTDIR/merged).")

    def lora_options(self) -> LoraOptions | None:
        if self.lora_r <= 0:
            return None
        return LoraOptions(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)

    def validate(self) -> list[str]:
        warnings = super().validate()
        if self.lora_r < 0:
            raise ConfigError(f"lora_r must be >= 0, got {self.lora_r}", hint="use 0 for full fine-tuning")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.merge and self.lora_r == 0:
            warnings.append("--merge has no effect without LoRA; set --lora-r N (e.g. 8) or drop --merge")
        if self.lora_r and self.lora_alpha < self.lora_r / 4:
            warnings.append(f"lora_alpha={self.lora_alpha} is far below lora_r={self.lora_r}: the adapter "
                            "barely moves the model; try lora_alpha = 2 * lora_r")
        return warnings


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict (ConfigError on a missing file or a syntax error)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: unknown format {path.suffix!r}",
                              hint="use .toml or .yaml")
    except ConfigError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise ConfigError(f"config file {path} could not be parsed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of key = value settings")
    return data


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key, where)
    if tp is Path:
        ok, value = isinstance(value, (str, Path)), Path(value) if isinstance(value, (str, Path)) else value
    elif tp is float:
        ok, value = isinstance(value, (int, float)) and not isinstance(value, bool), value
        value = float(value) if ok else value
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
        if not ok and isinstance(value, list) and all(isinstance(v, str) for v in value):
            ok, value = True, ",".join(value)  # target_modules = ["q_proj", "v_proj"]
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: '{key}' expects {getattr(tp, '__name__', tp)}, got {value!r}")
    return value


def load_config(
    cls: type[C],
    file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    section: str | None = None,
) -> C:
    """`cls` from its defaults, then `file` (its `[section]` table if present), then non-None overrides."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if file is not None:
        data = read_config_file(Path(file))
        if section and isinstance(data.get(section), dict):
            stray = [k for k, v in data.items() if not isinstance(v, dict)]
            if stray:
                raise ConfigError(f"config file {file}: {', '.join(repr(k) for k in stray)} is outside the "
                                  f"[{section}] table and would not apply",
                                  hint=f"move it into [{section}] (or use no tables at all)")
            data = data[section]
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown key '{key}' in config file {file}",
                                  hint=f"known keys: {', '.join(sorted(fields))}")
            values[name] = _coerce(value, hints[name], key, f"config file {file}")
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(f"unknown option '{name}' for {cls.__name__}")
        values[name] = _coerce(value, hints[name], name, "command line")
    try:
        return cls(**values)
    except TypeError as e:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"missing setting(s) {', '.join(missing) or str(e)}: give them as flags or in "
                          "the --config file") from None


def params_json(cfg: BaseConfig, *, drop: tuple[str, ...] = ()) -> str:
    """Canonical JSON of a config (for manifests and reuse keys)."""
    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in drop}, sort_keys=True)


def build_config(
    cls: type[C], file: Path | None, overrides: dict[str, Any], *, section: str | None = None
) -> tuple[C, list[str]]:
    """`load_config` + `validate()`: the config and its warnings (the CLI prints them as 'Warning: ...')."""
    cfg = load_config(cls, file, overrides, section=section)
    return cfg, cfg.validate()
