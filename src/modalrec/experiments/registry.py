"""The results registry: one small JSON file per published row, written from finished runs, never by hand.

Layout: ``<registry>/<dataset>/<protocol>/<label>.json`` (e.g. ``results/tiktok/paper/mmssl.json``): one entry per
model (or ablation variant) x dataset x evaluation protocol. An entry holds the model and its label, the dataset's
name, sizes, modalities and content hash, the protocol, the seeds with each seed's test and validation metrics,
best epoch, seconds per epoch and split hash, the mean and sample std of every test metric, the resolved settings
(``config``: every model hyper-parameter, as the run was built with it; runs whose metrics.json predates that record
read the values they did not set at today's defaults), the command that produced it, the package version and the
date it was written.

Merge rule: writing runs into an existing entry adds their seeds (a seed already there is replaced by the new run)
only when the entry describes the same experiment: the same model, the same settings (every config key except
where and how fast it ran: the seed, the data folder's path, the device, thread count, progress bars and the
evaluation chunk size), the same protocol, and the same dataset (name, sizes, modalities and, for data read from
files, the same content hash). Anything else is refused with the differences named, so results of two settings
never end up averaged in one row; ``replace=True`` (``--registry-replace``) replaces the entry instead.

The summary fields (``seeds``, ``summary``, ``best_epochs``, ``epoch_seconds_median``) are derived from ``runs``
and checked on reading, so an entry edited by hand is refused rather than rendered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import platform
import shlex
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from modalrec.atomic import atomic_write_text
from modalrec.errors import ConfigError, ModalrecError
from modalrec.experiments.results import RunRecord
from modalrec.experiments.runner import load_config_from_dict, slug
from modalrec.experiments.stats import summarize
from modalrec.run_folder import config_differences, flatten_config
from modalrec.version import package_version

FORMAT = 1
#: Config keys that say where or how fast a run ran, not what it computed: not recorded, not compared.
NOT_RECORDED: tuple[tuple[str, ...], ...] = (
    ("seed",),
    ("device",),
    ("data", "path"),
    ("train", "threads"),
    ("train", "progress"),
    ("eval", "chunk_size"),
)
SIGNIFICANT = 6  # digits kept of every metric value (the tables show four decimals)
DATASET_KEYS = ("name", "users", "items", "modalities", "generated", "data_sha256")
SPLIT_KEYS = ("interactions", "split_sha256")  # per seed; shown on the dataset when every seed agrees


def _sig(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


@dataclass
class Entry:
    """One registry entry (see the module docstring); ``runs`` are sorted by seed."""

    label: str
    model: str
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    config: dict[str, Any]
    runs: list[dict[str, Any]]
    command: str = ""
    version: str = field(default_factory=package_version)
    date: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).date().isoformat())

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.runs]

    @property
    def protocol_name(self) -> str:
        return str(self.protocol.get("name", "default"))

    def summary(self) -> dict[str, dict[str, float | None]]:
        """metric -> {mean, std} over the seeds (std None for a single seed: a sample std of one run is undefined)."""
        out: dict[str, dict[str, float | None]] = {}
        keys = [k for k in self.runs[0]["test"]] if self.runs else []
        for key in keys:
            values = [float(r["test"][key]) for r in self.runs if key in r["test"]]
            mean, std = summarize(values)
            if math.isfinite(mean):
                out[key] = {"mean": _sig(mean), "std": _sig(std) if len(values) > 1 else None}
        return out

    def epoch_seconds_median(self) -> float:
        """Median over seeds of each run's median seconds per epoch."""
        return round(statistics.median(float(r["epoch_seconds_median"]) for r in self.runs), 4)

    def dataset_json(self) -> dict[str, Any]:
        """The dataset description plus, when every seed has the same split (a split shipped with the data), its
        sizes and hash (``null`` when the split is made from the seed)."""
        out = {k: v for k, v in self.dataset.items() if k not in SPLIT_KEYS}
        for key in SPLIT_KEYS:
            values = [r.get(key) for r in self.runs]
            out[key] = values[0] if values and all(v == values[0] for v in values) else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "label": self.label,
            "model": self.model,
            "dataset": self.dataset_json(),
            "protocol": self.protocol,
            "seeds": self.seeds,
            "summary": {"test": self.summary()},
            "best_epochs": [int(r["best_epoch"]) for r in self.runs],
            "epoch_seconds_median": self.epoch_seconds_median(),
            "command": self.command,
            "version": self.version,
            "date": self.date,
            "config": self.config,
            "runs": self.runs,
        }

    def records(self, path: Path) -> list[RunRecord]:
        """The seeds as :class:`RunRecord` s, so the table helpers of :mod:`modalrec.experiments.tables` apply."""
        return [
            RunRecord(
                self.label,
                self.model,
                int(r["seed"]),
                path,
                {**r, "model": self.model, "dataset": self.dataset["name"], "protocol": self.protocol},
            )
            for r in self.runs
        ]


# ---- reading and writing --------------------------------------------------------------------------------------


def entry_path(registry: Path, dataset: str, protocol: str, label: str) -> Path:
    """``<registry>/<dataset>/<protocol>/<label>.json`` (names made file-safe)."""
    return Path(registry) / slug(dataset) / slug(protocol) / f"{slug(label)}.json"


def _require(d: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in d:
        raise ModalrecError(f"{path}: registry entry has no '{key}'")
    if not isinstance(d[key], kind):
        raise ModalrecError(f"{path}: registry entry field '{key}' has the wrong type")
    return d[key]


def _check_run(run: Any, path: Path) -> dict[str, Any]:
    if not isinstance(run, dict):
        raise ModalrecError(f"{path}: every item of 'runs' must be a mapping")
    _require(run, "seed", int, path)
    _require(run, "best_epoch", int, path)
    _require(run, "epoch_seconds_median", (int, float), path)
    test = _require(run, "test", dict, path)
    if not test or not all(isinstance(v, int | float) for v in test.values()):
        raise ModalrecError(f"{path}: seed {run['seed']}: 'test' must map metric names to numbers")
    return run


def entry_from_json(raw: Any, path: Path) -> Entry:
    """Check a parsed entry (fields, types, derived fields consistent with ``runs``) and build the Entry."""
    if not isinstance(raw, dict):
        raise ModalrecError(f"{path}: a registry entry must be a JSON object")
    if raw.get("format") != FORMAT:
        raise ModalrecError(
            f"{path}: unknown registry format {raw.get('format')!r} (this version reads {FORMAT})"
        )
    runs = [_check_run(r, path) for r in _require(raw, "runs", list, path)]
    if not runs:
        raise ModalrecError(f"{path}: registry entry has no runs")
    dataset = _require(raw, "dataset", dict, path)
    _require(dataset, "name", str, path)
    entry = Entry(
        label=_require(raw, "label", str, path),
        model=_require(raw, "model", str, path),
        dataset=dataset,
        protocol=_require(raw, "protocol", dict, path),
        config=_require(raw, "config", dict, path),
        runs=sorted(runs, key=lambda r: int(r["seed"])),
        command=_require(raw, "command", str, path),
        version=_require(raw, "version", str, path),
        date=_require(raw, "date", str, path),
    )
    derived = entry.to_json()
    for key in ("seeds", "summary", "best_epochs", "epoch_seconds_median"):
        if not _same(raw.get(key), derived[key]):
            raise ModalrecError(
                f"{path}: '{key}' does not match the per-seed 'runs' (entries are written by modalrec, not by "
                "hand); rewrite it with `modalrec report --registry ... --add RUN_DIR`"
            )
    return entry


def _same(a: Any, b: Any) -> bool:
    """Equal up to float rounding of the stored summaries."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-12)
    return bool(a == b)


def read_entry(path: Path) -> Entry:
    """Read and check one entry file; any problem is one ``ModalrecError`` naming the file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModalrecError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModalrecError(f"{path}: cannot read the registry entry ({exc})") from None
    return entry_from_json(raw, Path(path))


def dump_entry(entry: Entry) -> str:
    """The entry's JSON text: two-space indents, short mappings and lists of numbers on one line."""
    return _dump(entry.to_json(), 0) + "\n"


def _dump(value: Any, level: int) -> str:
    flat = json.dumps(value, ensure_ascii=False)
    scalars = isinstance(value, list | dict) and not any(
        isinstance(v, list | dict) for v in (value.values() if isinstance(value, dict) else value)
    )
    if not isinstance(value, list | dict) or (scalars and len(flat) <= 100) or not value:
        return flat
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, list):
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in value) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k)}: {_dump(v, level + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def read_registry(registry: Path, dataset: str, protocol: str) -> dict[str, tuple[Path, Entry]]:
    """label -> (file, entry) for every entry of one dataset and protocol (empty when there is none)."""
    folder = Path(registry) / slug(dataset) / slug(protocol)
    out: dict[str, tuple[Path, Entry]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = read_entry(path)
        out[entry.label] = (path, entry)
    return out


# ---- building entries from runs -------------------------------------------------------------------------------


def resolved_model(section: dict[str, Any]) -> dict[str, Any]:
    """A config's model section with every hyper-parameter of the model's Config, today's default where unset.

    Recording every value (not only those a run set) keeps an entry's meaning when a default changes later: runs
    made before and after the change differ in their recorded settings and are not averaged into one row.
    """
    from modalrec.models import MODELS, model_config

    name = section.get("name")
    if not isinstance(name, str) or name not in MODELS:
        return dict(section)
    try:
        cfg = model_config(MODELS[name], section)
    except ConfigError:
        return dict(section)  # a setting that no longer exists: keep it as written (and differ)
    is_instance = dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    values = dataclasses.asdict(cfg) if is_instance else dict(vars(cfg))
    return {"name": name, **json.loads(json.dumps(values, default=str))}  # tuples as lists, as read back


def recorded_config(raw: dict[str, Any], model_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run config in today's canonical form (settings added since take their defaults), minus NOT_RECORDED.

    The model section holds every hyper-parameter (:func:`resolved_model`): ``model_settings`` (the values the
    run was built with, as its metrics.json records them) win over today's defaults.
    """
    try:
        canonical = dict(load_config_from_dict(raw).to_dict())
    except ConfigError:
        canonical = json.loads(json.dumps(raw))  # a setting that no longer exists: keep it as written
    if isinstance(canonical.get("model"), dict):
        canonical["model"] = resolved_model({**canonical["model"], **(model_settings or {})})
    for key in NOT_RECORDED:
        node: Any = canonical
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key[-1], None)
    return canonical


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModalrecError(f"{path}: cannot read the run's config ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ModalrecError(f"{path}: the run's config is not a mapping")
    return raw


def machine(device: str, threads: object) -> str:
    """What the timings were measured on: the GPU, or the processor and the number of training threads
    (``threads`` 0 means every core this process may use)."""
    from modalrec.experiments.runner import available_cores
    from modalrec.train import resolve_device

    try:
        resolved = resolve_device(device)
    except (ConfigError, RuntimeError):  # a CUDA run recorded where there is no GPU
        return f"{device} device"
    if resolved.type == "cuda":
        import torch

        return f"{torch.cuda.get_device_name(resolved)} (CUDA)"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = threads if isinstance(threads, int) and threads > 0 else available_cores()
    return f"{name}, {n} thread{'s' if n != 1 else ''}"


class _Fingerprints:
    """Dataset fingerprints, loaded once per data setting and seed (the split may depend on the seed)."""

    def __init__(self) -> None:
        self.cache: dict[str, dict[str, Any]] = {}

    def __call__(self, raw_config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        from modalrec.config import config_from_dict
        from modalrec.data.fingerprint import fingerprint
        from modalrec.data.source import dataset_from_config

        key = json.dumps([raw_config.get("data"), raw_config.get("seed")], sort_keys=True, default=str)
        if key not in self.cache:
            try:
                cfg = config_from_dict(raw_config)
                self.cache[key] = fingerprint(dataset_from_config(cfg.data, cfg.seed))
            except ModalrecError as exc:
                raise ModalrecError(
                    f"{run_dir}: cannot read the run's dataset to fingerprint it: {exc}"
                ) from None
        return self.cache[key]


def entry_from_run(
    record: RunRecord, fingerprints: Callable[[dict[str, Any], Path], dict[str, Any]]
) -> Entry:
    """A single-seed entry from one finished run folder (metrics.json + config.yaml)."""
    raw = _run_config(record.run_dir)
    fp = fingerprints(raw, record.run_dir)
    generated = str((raw.get("data") or {}).get("path", "synthetic")) == "synthetic"
    m = record.metrics
    run = {
        "seed": record.seed,
        "best_epoch": int(m.get("best_epoch", -1)),
        "epochs_run": int(m.get("epochs_run", 0)),
        "train_seconds": float(m.get("train_seconds", 0.0)),
        "epoch_seconds_median": float(m.get("epoch_seconds_median", 0.0)),
        "machine": machine(str(raw.get("device", "auto")), (raw.get("train") or {}).get("threads", 0)),
        "interactions": fp["interactions"],
        "data_sha256": fp["data_sha256"],
        "split_sha256": fp["split_sha256"],
        "test": _metrics(m.get("test")),
        "valid": _metrics(m.get("valid")),
    }
    if not run["test"]:
        raise ModalrecError(f"{record.run_dir}: metrics.json has no test metrics")
    dataset = {
        "name": fp["name"],
        "users": fp["users"],
        "items": fp["items"],
        "modalities": fp["modalities"],
        "generated": generated,
        "data_sha256": None if generated else fp["data_sha256"],  # generated data differs by seed
    }
    proto = m.get("protocol")
    protocol: dict[str, Any] = dict(proto) if isinstance(proto, dict) else {"name": str(proto)}
    settings = m.get("model_config") if isinstance(m.get("model_config"), dict) else None
    return Entry(record.label, record.model, dataset, protocol, recorded_config(raw, settings), [run])


def _metrics(d: object) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {k: _sig(float(v)) for k, v in d.items() if "@" in k and isinstance(v, int | float)}


def differences(old: Entry, new: Entry) -> list[str]:
    """Why ``new`` runs may not join ``old``: model, dataset, protocol and settings that differ."""
    diffs = []
    if old.label != new.label:  # two labels with the same file name
        diffs.append(f"label: {old.label!r} -> {new.label!r}")
    if old.model != new.model:
        diffs.append(f"model: {old.model!r} -> {new.model!r}")
    for key in DATASET_KEYS:
        if old.dataset.get(key) != new.dataset.get(key):
            diffs.append(f"dataset {key}: {old.dataset.get(key)!r} -> {new.dataset.get(key)!r}")
    if old.protocol != new.protocol:
        diffs.append(f"protocol: {old.protocol!r} -> {new.protocol!r}")
    return diffs + config_differences(old.config, new.config, ignore=())


def merge_entries(old: Entry, new: Entry, where: object) -> Entry:
    """``new``'s runs added to ``old`` (a seed in both: the new run wins); refused when they differ (module doc)."""
    diffs = differences(old, new)
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise ModalrecError(
            f"{where}: holds '{old.label}' run with other settings ({shown}); results of different settings are "
            "not merged: pass --registry-replace to replace the entry, or record under another registry folder"
        )
    runs = {int(r["seed"]): r for r in old.runs}
    runs.update({int(r["seed"]): r for r in new.runs})
    return replace(new, runs=[runs[s] for s in sorted(runs)])


def check_can_record(
    registry: Path, dataset: str, protocol: str, label: str, model: str, config: dict[str, Any]
) -> None:
    """Before training: refuse now (not hours later) when the entry these runs would join has other settings."""
    path = entry_path(registry, dataset, protocol, label)
    if not path.exists():
        return
    old = read_entry(path)
    diffs = ([f"model: {old.model!r} -> {model!r}"] if old.model != model else []) + config_differences(
        old.config, recorded_config(config), ignore=()
    )
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise ModalrecError(
            f"{path}: holds '{old.label}' run with other settings ({shown}); results of different settings are "
            "not merged: pass --registry-replace to replace the entry, or record under another registry folder"
        )


def record_runs(
    registry: Path,
    records: Sequence[RunRecord],
    command: Callable[[Entry], str] | None = None,
    replace_existing: bool = False,
) -> list[Path]:
    """Write (or merge into) one entry per label x dataset x protocol of ``records``; returns the files written.

    ``command(entry)`` gives the entry's command line (default: :func:`train_command`). Every entry is built and
    checked before the first file is written, so a refused merge leaves the registry as it was.
    """
    fingerprints = _Fingerprints()
    built: dict[Path, Entry] = {}
    for record in records:
        entry = entry_from_run(record, fingerprints)
        path = entry_path(registry, entry.dataset["name"], entry.protocol_name, entry.label)
        built[path] = merge_entries(built[path], entry, record.run_dir) if path in built else entry
    final: dict[Path, Entry] = {}
    for path, entry in built.items():
        if path.exists() and not replace_existing:
            entry = merge_entries(read_entry(path), entry, path)
        final[path] = replace(entry, command=(command or train_command)(entry))
    for path, entry in final.items():
        atomic_write_text(path, dump_entry(entry))
    return list(final)


# ---- the command line of an entry -----------------------------------------------------------------------------


def data_argument(dataset: dict[str, Any]) -> str:
    """``--data`` as a reader types it: ``synthetic``, or ``path/to/<dataset name>``."""
    return "synthetic" if dataset.get("generated") else f"path/to/{dataset['name']}"


def set_value(value: Any) -> str:
    """A config value as ``--set key=VALUE`` parses it back (YAML scalars and flow lists)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def seed_loop(parts: Sequence[str], seeds: Sequence[int]) -> str:
    """The command for one seed, or a shell loop over several."""
    line = " ".join(shlex.quote(p) for p in parts)
    if len(seeds) == 1:
        return f"{line} --seed {seeds[0]}"
    return f"for seed in {' '.join(map(str, seeds))}; do {line} --seed $seed; done"


def train_command(entry: Entry) -> str:
    """A self-contained ``modalrec train`` command reproducing the entry: every setting that differs from the
    model's defaults as ``--set``."""
    defaults = flatten_config(recorded_config({"model": {"name": entry.model}}))
    parts = ["modalrec", "train", "--model", entry.model, "--data", data_argument(entry.dataset)]
    for key, value in flatten_config(entry.config).items():
        if key != ("model", "name") and defaults.get(key, object()) != value:
            parts += ["--set", f"{'.'.join(key)}={set_value(value)}"]
    return seed_loop(parts, entry.seeds)
