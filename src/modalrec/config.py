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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modalrec.config_ranges import check_run_config
from modalrec.data.missing import FILLS, parse_drop_spec
from modalrec.errors import ConfigError
from modalrec.fields import coerce, set_fields, short_repr
from modalrec.metrics import NDCG_VARIANTS
from modalrec.models import MODELS, model_config

PROTOCOLS = ("standard", "paper")


@dataclass
class EvalConfig:
    """Evaluation settings (the protocols are described in :mod:`modalrec.evaluate`)."""

    ks: list[int] = field(default_factory=lambda: [10, 20, 50])  # cut-offs K
    protocol: str = "standard"  # preset: "standard" or "paper" (see module docstring)
    ndcg: str | None = None  # override the preset's NDCG variant: "standard" or "ngcf"
    mask_val_at_test: bool | None = None  # override the preset's masking of validation items at test time
    metric: str = "recall@20"  # validation metric used for early stopping and model selection
    chunk_size: int = 0  # users per score block; 0 = automatic (about 128 MB of scores)
    group_bins: list[int] = field(default_factory=lambda: [0, 4, 8, 16, 32])  # lower edges of user groups

    def validate(self, n_items: int | None = None) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"eval.protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        if self.ndcg is not None and self.ndcg not in NDCG_VARIANTS:
            raise ConfigError(f"eval.ndcg must be one of {NDCG_VARIANTS}, not {self.ndcg!r}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ConfigError(f"eval.ks must be positive integers, got {self.ks}")
        if n_items is not None and max(self.ks) > n_items:
            raise ConfigError(f"eval.ks contains {max(self.ks)} but the catalogue has only {n_items} items")
        name = self.metric.split("@")
        if (
            len(name) != 2
            or name[0] not in ("recall", "precision", "ndcg", "hit")
            or int(name[1]) not in self.ks
        ):
            raise ConfigError(
                f"eval.metric {self.metric!r} must be recall|precision|ndcg|hit@K with K in {self.ks}"
            )

    @property
    def ndcg_variant(self) -> str:
        return self.ndcg or ("ngcf" if self.protocol == "paper" else "standard")

    @property
    def masks_val_at_test(self) -> bool:
        if self.mask_val_at_test is not None:
            return self.mask_val_at_test
        return self.protocol == "standard"

    def describe(self) -> dict[str, object]:
        """The protocol as recorded in metrics.json."""
        return {
            "name": self.protocol,
            "ndcg": self.ndcg_variant,
            "mask_train": True,
            "mask_val_at_test": self.masks_val_at_test,
            "ks": list(self.ks),
            "users": "users with at least one held-out item in the split",
            "ranking": "all items",
        }


@dataclass
class TrainConfig:
    """Optimisation and early-stopping settings."""

    epochs: int = 200  # maximum number of epochs
    lr: float = 1e-3  # learning rate of the main optimiser
    batch_size: int = 2048  # BPR triples per batch
    patience: int = 10  # evaluations (or passes over the training pairs) without improvement before stopping
    patience_unit: str = "evaluations"  # "evaluations" or "pairs" (patience × nnz training pairs seen)
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
    health_epochs: int = 3  # epochs before the health check (loss moved? beats popularity?); 0 = off
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
    drop_modality: str = ""  # hide modalities for a seeded share of items, e.g. "visual:0.3,textual:0.5"
    missing_fill: str = (
        "neighbours"  # missing content: "neighbours", "mean" (imputed), "mask" (model-side), "zeros"
    )


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


def build_model_config(model_cls: Any, params: dict[str, Any]) -> Any:
    """The model's Config dataclass with ``params`` (minus "name") applied and type-checked."""
    return model_config(model_cls, params)


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
        raise ConfigError(f"unknown model {short_repr(name)}; available: {', '.join(MODELS)}")
    model = {**model, "name": name}
    build_model_config(MODELS[name], model)  # validates keys and types now, before any training
    cfg.model = model
    for section in ("data", "train", "eval"):
        values = raw.get(section, {}) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"'{section}' must be a mapping")
        if section == "train":  # the model's own training defaults, below anything the run sets
            values = {**MODELS[name].train_defaults, **values}
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
    if t.patience_unit not in ("evaluations", "pairs"):
        raise ConfigError(f"train.patience_unit must be 'evaluations' or 'pairs', not {t.patience_unit!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {cfg.device!r}")
    if cfg.data.split not in ("ratio", "loo", "temporal", "cold-start"):
        raise ConfigError(f"data.split must be ratio|loo|temporal|cold-start, not {cfg.data.split!r}")
    parse_drop_spec(cfg.data.drop_modality)  # "modality:fraction" entries, fractions in [0, 1]
    if cfg.data.missing_fill not in FILLS:
        raise ConfigError(
            f"data.missing_fill must be one of {'|'.join(FILLS)}, not {cfg.data.missing_fill!r}"
        )
    cfg.eval.validate()


def check_against_data(cfg: RunConfig, n_items: int, modalities: list[str]) -> None:
    """Checks that need the dataset, run before the model is built: K vs catalogue size, modalities vs model.

    Args:
        cfg: the run configuration.
        n_items: catalogue size of the loaded dataset.
        modalities: the dataset's modality names after ``data.modalities`` was applied.
    """
    cfg.eval.validate(n_items)
    needs = MODELS[cfg.model_name].modalities
    if needs == "any" and not modalities:
        id_only = [name for name, cls in MODELS.items() if cls.modalities in ((), "optional")]
        why = "data.modalities is empty" if cfg.data.modalities == [] else "the dataset has no feature files"
        if any(frac >= 1.0 for frac in parse_drop_spec(cfg.data.drop_modality).values()):
            why = f"data.drop_modality={cfg.data.drop_modality} removes every modality it has"
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


def names_dataset(raw: dict[str, Any], overrides: list[str] | None = None) -> bool:
    """True when the settings give ``data.path``, in the file or through a ``--set`` override.

    Shipped configs leave the dataset out (it is given with ``--data``), so a config that names none must not
    quietly fall back to the synthetic default on the command line: see :func:`no_dataset_error`.
    """
    merged = merge(raw, parse_overrides(overrides or []))
    data = merged.get("data")
    return isinstance(data, dict) and data.get("path") not in (None, "")


def no_dataset_error(config: str | Path) -> ConfigError:
    """The error for a command given a config file but no dataset (neither ``--data`` nor ``data.path``)."""
    return ConfigError(
        f"{config} names no dataset: give the dataset folder with --data PATH (or --data synthetic for the "
        "planted data)"
    )


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """``raw[key]`` as a mapping (missing or empty: {}); anything else is a ConfigError naming the section."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be a mapping of settings, got {short_repr(value)}")
    return value


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML text (written to a run folder as config.yaml)."""
    data = cfg.to_dict()
    return yaml.safe_dump(data, sort_keys=False)
