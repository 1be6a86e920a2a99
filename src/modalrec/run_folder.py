"""Run folders that never lie: what may be written into ``--out``, when, and what a resume must match.

* ``check_out(out, cfg, resume, overwrite)`` runs before anything is built or written. It refuses an ``--out``
  that is (or is under) a file, a folder holding a *finished* run unless ``--overwrite`` (or ``--resume``, which
  re-reports it), a folder holding an *interrupted* run unless ``--resume`` or ``--overwrite``, and a
  ``--resume`` whose model, data or settings differ from the recorded ``config.yaml``.
* ``start(out, cfg, overwrite)`` runs once the run really starts: it removes the outputs of a replaced run
  and stale temporary files, then writes ``config.yaml`` atomically. A refused or failed attempt therefore
  never leaves a ``config.yaml`` describing a run that did not happen.
* ``read_metrics`` and ``resume_state`` turn a truncated ``metrics.json`` or a ``last.pt`` without the training
  state into one clear error instead of a ``KeyError``/``JSONDecodeError``.

Every file goes through ``modalrec.atomic``, so run-folder files get the same permissions as any other file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from modalrec.atomic import atomic_write_text, check_output_path
from modalrec.errors import ModalrecError

# Settings that may change between an interrupted run and its resume: those that do not change what is computed,
# and the stopping rule (``--resume --set train.epochs=N`` extends or finalises a stopped run, a documented use).
VOLATILE = {
    ("train", "threads"),
    ("train", "progress"),
    ("eval", "chunk_size"),
    ("device",),
    ("train", "epochs"),
    ("train", "patience"),
}
# Outputs of a finished run, removed when ``--overwrite`` replaces it.
OUTPUTS = ("metrics.json", "history.csv", "curves.png", "checkpoint.pt", "last.pt", "log.txt", "config.yaml")
# What ``last.pt`` must hold to resume.
RESUME_KEYS = ("epoch", "optimizers", "schedulers", "best_score", "best_epoch", "bad", "history")


def flatten_config(d: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """A nested config as ``{("train", "lr"): 0.001, ...}`` (an empty mapping contributes no key)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[tuple[str, ...], Any] = {}
    for k, v in d.items():
        out.update(flatten_config(v, (*prefix, str(k))))
    return out


def _comparable(raw: dict[str, Any], ignore: Collection[tuple[str, ...]]) -> dict[tuple[str, ...], Any]:
    flat = {k: v for k, v in flatten_config(raw).items() if k not in ignore}
    path = flat.get(("data", "path"))
    if isinstance(path, str) and path != "synthetic":
        flat[("data", "path")] = str(Path(path).resolve())
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}


def config_differences(
    recorded: dict[str, Any], wanted: dict[str, Any], ignore: Collection[tuple[str, ...]] = VOLATILE
) -> list[str]:
    """``key: recorded -> wanted`` for every setting not in ``ignore`` that differs (model, data, training, eval).

    The default ``ignore`` is what a resume may change (:data:`VOLATILE`)."""
    a, b = _comparable(recorded, ignore), _comparable(wanted, ignore)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            diffs.append(f"{'.'.join(key)}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def _recorded_config(out: Path) -> dict[str, Any] | None:
    path = out / "config.yaml"
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModalrecError(f"{path}: cannot read the recorded run config ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ModalrecError(f"{path}: the recorded run config is not a mapping")
    return raw


def is_finished(out: Path) -> bool:
    """A finished run has its ``metrics.json`` (written last)."""
    return (out / "metrics.json").exists()


def check_out(out: Path, cfg: Any, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that would be overwritten silently or resumed with other settings (see module doc)."""
    check_output_path(out, folder=True)
    if resume and overwrite:
        raise ModalrecError("--resume continues a run and --overwrite replaces it; give only one")
    if not out.exists():
        if resume:
            raise ModalrecError(f"{out}: nothing to resume (the folder does not exist)")
        return
    interrupted = (out / "last.pt").exists()
    if resume:
        recorded = _recorded_config(out)
        if recorded is None:
            if is_finished(out) or interrupted:
                raise ModalrecError(f"{out}: no config.yaml, so the run cannot be checked before resuming")
            raise ModalrecError(f"{out}: nothing to resume (no config.yaml, last.pt or metrics.json)")
        diffs = config_differences(recorded, cfg.to_dict())
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            raise ModalrecError(
                f"{out}: --resume with other settings than the recorded run ({shown}); resume with the same "
                "model, data and settings, or start a new run with another --out"
            )
        return
    if overwrite:
        return
    if is_finished(out):
        raise ModalrecError(
            f"{out}: holds a finished run; pass --overwrite to replace it, --resume to re-report it, "
            "or choose another --out"
        )
    if interrupted:
        raise ModalrecError(
            f"{out}: holds an interrupted run (last.pt); pass --resume to continue it or --overwrite to replace it"
        )


def start(out: Path, config_text: str, fresh: bool) -> None:
    """The run really starts: clear what a replaced run left (``fresh``), drop stale temp files, write config.

    In a data-parallel run only rank 0 touches the folder (another rank could delete rank 0's temporary file).
    """
    out.mkdir(parents=True, exist_ok=True)
    if _is_other_rank():
        return
    for stale in out.glob(".*.*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)  # temp files of a write that a kill interrupted; never read
    if fresh:
        for name in OUTPUTS:
            if name != "log.txt":  # the log handler of this attempt is already open
                (out / name).unlink(missing_ok=True)
    atomic_write_text(out / "config.yaml", config_text)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def metrics_json(metrics: dict[str, Any]) -> str:
    """``metrics.json`` text in strict JSON: NaN/inf (e.g. the metric of an empty user group) become ``null``."""
    return json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False)


def read_metrics(path: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json``; a truncated or foreign file is a clear error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModalrecError(
            f"{path}: unreadable ({type(exc).__name__}); the run may have been damaged, train it again with "
            "--overwrite"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("test"), dict):
        raise ModalrecError(f"{path}: not a modalrec metrics file (no 'test' section)")
    return data


def resume_state(ckpt: dict[str, Any], path: Path, n_optimizers: int, n_schedulers: int) -> dict[str, Any]:
    """Check that ``last.pt`` holds the whole training state for this model; return it."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ModalrecError(
            f"{path}: cannot resume, the checkpoint lacks {missing} (not a modalrec last.pt?)"
        )
    opts, schs = ckpt["optimizers"], ckpt["schedulers"]
    if not isinstance(opts, list) or len(opts) != n_optimizers:
        raise ModalrecError(
            f"{path}: cannot resume, it holds {_count(opts)} optimiser states, the model has {n_optimizers}"
        )
    if not isinstance(schs, list) or len(schs) != n_schedulers:
        raise ModalrecError(
            f"{path}: cannot resume, it holds {_count(schs)} scheduler states, the run has {n_schedulers}"
        )
    if not isinstance(ckpt["epoch"], int) or ckpt["epoch"] < 0:
        raise ModalrecError(f"{path}: cannot resume, epoch {ckpt['epoch']!r} is not a number >= 0")
    try:
        history = json.loads(ckpt["history"])
    except (TypeError, ValueError):
        raise ModalrecError(f"{path}: cannot resume, its history is unreadable") from None
    if not isinstance(history, list):
        raise ModalrecError(f"{path}: cannot resume, its history is not a list")
    return {**ckpt, "history": history}


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else "no list of"


def _is_other_rank() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0
