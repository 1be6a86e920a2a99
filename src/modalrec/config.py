"""Run configuration: dataclasses, YAML loading and ``--set a.b=value`` overrides.

A YAML config mirrors the sections below::

    model: {name: lightgcn, n_layers: 3}     # name + any hyper-parameter of that model's Config
    data: {path: synthetic, split: ratio}
    train: {epochs: 200, lr: 0.001}
    eval: {protocol: paper, ks: [10, 20, 50]}
    seed: 0

Override values are parsed with ``yaml.safe_load`` (so ``--set eval.ks=[20]`` gives a list). Unknown keys and
wrong types are errors that list the valid choices.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modalrec.config_ranges import check_run_config
from modalrec.errors import ConfigError
from modalrec.evaluate import EvalConfig


@dataclass
class TrainConfig:
    """Optimisation and early-stopping settings."""

    epochs: int = 200  # maximum number of epochs
    lr: float = 1e-3  # learning rate of the main optimiser
    batch_size: int = 2048  # BPR triples per batch
    patience: int = 10  # evaluations without improvement before stopping
    weight_decay: float = 0.0  # optimiser weight decay (models also have their own L2 term)
    optimizer: str = "adam"  # "adam" or "adamw" (models may override, e.g. MMSSL)
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    lr_schedule: str = "none"  # "none", "step" (×lr_gamma every lr_step epochs) or "cosine"
    lr_step: int = 50  # epochs between decays of the step schedule
    lr_gamma: float = 0.5  # decay factor of the step schedule
    ema: float = 0.0  # decay β of a moving average of the weights used for evaluation (0 = off; e.g. 0.99)
    eval_every: int = 1  # epochs between validation evaluations
    sampler: str = (
        "interactions"  # "interactions" (each training pair once per epoch) or "users" (MMSSL style)
    )
    threads: int = 0  # torch CPU threads; 0 = all available cores
    progress: bool = True  # show a progress bar per epoch (only on a terminal)
    max_batches: int = (
        0  # stop each epoch after this many batches (smoke tests, benchmarks); 0 = the whole epoch
    )


@dataclass
class DataConfig:
    """Where the data comes from and how to split it when no split ships."""

    path: str = "synthetic"  # a dataset folder, or "synthetic" for the embedded planted generator
    format: str = "auto"  # "auto", "canonical", "mmssl" or "mmrec"
    split: str = "ratio"  # "ratio", "loo", "temporal" or "cold-start" (used only when no split ships)
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/val/test shares
    modalities: list[str] | None = None  # restrict to these modalities (None = all)
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig overrides for path=synthetic


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "lightgcn"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- type-checked assignment ----------------------------------------------------------------------------------


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _show(value: Any) -> str:
    """A short repr for error messages: a YAML alias bomb expands to a huge value whose full repr never ends."""
    return _REPR.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting int->float, list->tuple); raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {_show(value)} does not match {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    return value


def set_fields(obj: Any, values: dict[str, Any], prefix: str) -> None:
    """Assign ``values`` onto the dataclass ``obj`` with type checks; unknown keys list the valid ones."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown key '{prefix}{key}'; valid keys: {', '.join(prefix + n for n in names)}"
            )
        setattr(obj, key, coerce(value, hints[key], prefix + key))


def build_model_config(model_cls: Any, params: dict[str, Any]) -> Any:
    """The model's Config dataclass with ``params`` (minus "name") applied and type-checked."""
    cfg = model_cls.Config()
    set_fields(cfg, {k: v for k, v in params.items() if k != "name"}, "model.")
    return cfg


# ---- loading --------------------------------------------------------------------------------------------------


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["train.lr=0.01", "eval.ks=[20]"] -> nested dict, values parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise ConfigError(f"--set {key}: value nested too deeply") from None
        parts = key.strip().split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set key {key!r} is malformed")
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set key {key!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts (``extra`` wins)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {exc.start}); a config must be YAML text"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: malformed YAML ({' '.join(str(exc).split())[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply to be a config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must be a mapping of sections")
    return data


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a nested dict (YAML + overrides), checking every key and type."""
    from modalrec.models import MODELS

    cfg = RunConfig()
    sections = {"model", "data", "train", "eval", "seed", "device"}
    for key in raw:
        if key not in sections:
            raise ConfigError(f"unknown config section '{key}'; valid: {', '.join(sorted(sections))}")
    model = raw.get("model", {})
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict):
        raise ConfigError("'model' must be a mapping with a 'name' and hyper-parameters")
    name = model.get("name", cfg.model_name)
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown model {_show(name)}; available: {', '.join(MODELS)}")
    model = {**model, "name": name}
    build_model_config(MODELS[name], model)  # validates keys and types now, before any training
    cfg.model = model
    for section in ("data", "train", "eval"):
        values = raw.get(section, {}) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"'{section}' must be a mapping")
        set_fields(getattr(cfg, section), values, section + ".")
    if "seed" in raw:
        cfg.seed = coerce(raw["seed"], int, "seed")
    if "device" in raw:
        cfg.device = coerce(raw["device"], str, "device")
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Value checks that do not need the data."""
    check_run_config(cfg)  # every numeric range, with the valid range in the message
    t = cfg.train
    if t.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"train.optimizer must be 'adam' or 'adamw', not {t.optimizer!r}")
    if t.lr_schedule not in ("none", "step", "cosine"):
        raise ConfigError(f"train.lr_schedule must be none|step|cosine, not {t.lr_schedule!r}")
    if t.sampler not in ("interactions", "users"):
        raise ConfigError(f"train.sampler must be 'interactions' or 'users', not {t.sampler!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {cfg.device!r}")
    if cfg.data.split not in ("ratio", "loo", "temporal", "cold-start"):
        raise ConfigError(f"data.split must be ratio|loo|temporal|cold-start, not {cfg.data.split!r}")
    cfg.eval.validate()


def check_against_data(cfg: RunConfig, n_items: int, modalities: list[str]) -> None:
    """Checks that need the dataset, run before the model is built: K vs catalogue size, modalities vs model.

    Args:
        cfg: the run configuration.
        n_items: catalogue size of the loaded dataset.
        modalities: the dataset's modality names after ``data.modalities`` was applied.
    """
    from modalrec.models import MODELS

    cfg.eval.validate(n_items)
    needs = MODELS[cfg.model_name].modalities
    if needs == "any" and not modalities:
        id_only = [name for name, cls in MODELS.items() if cls.modalities in ((), "optional")]
        why = "data.modalities is empty" if cfg.data.modalities == [] else "the dataset has no feature files"
        raise ConfigError(
            f"model '{cfg.model_name}' needs at least one item modality but {why}; add <modality>.npy features "
            f"or pick a model that needs none: {', '.join(id_only)}"
        )
    if isinstance(needs, tuple) and needs:
        missing = [m for m in needs if m not in modalities]
        if missing:
            raise ConfigError(
                f"model '{cfg.model_name}' needs modalities {list(needs)}; the data lacks {missing} "
                f"(it has {modalities})"
            )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **top: Any) -> RunConfig:
    """YAML file (optional) + ``--set`` overrides + explicit top-level values (e.g. model name, seed)."""
    raw = read_yaml(path) if path else {}
    for section in ("data", "train", "eval"):
        _section(raw, section)  # a scalar section must not be silently replaced by a --set override
    if not isinstance(raw.get("model"), str):
        _section(raw, "model")
    extra = parse_overrides(overrides or [])
    raw = merge(raw, extra)
    for key, value in top.items():
        if value is None:
            continue
        if key == "model_name":
            model = raw.get("model", {})
            model = {"name": model} if isinstance(model, str) else dict(_section(raw, "model"))
            model["name"] = value
            raw["model"] = model
        elif key in ("data_path",):
            raw["data"] = {**_section(raw, "data"), "path": value}
        elif key == "protocol":
            raw["eval"] = {**_section(raw, "eval"), "protocol": value}
        else:
            raw[key] = value
    return config_from_dict(raw)


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """``raw[key]`` as a mapping (missing or empty: {}); anything else is a ConfigError naming the section."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be a mapping of settings, got {_show(value)}")
    return value


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML text (written to a run folder as config.yaml)."""
    data = cfg.to_dict()
    return yaml.safe_dump(data, sort_keys=False)
