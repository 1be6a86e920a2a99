"""The results-registry side of the experiment commands: ``--registry`` on ``compare``, ``ablate`` and ``train``,
and ``modalrec report --registry DIR [--add RUN_DIR ...] [--readme [FILE ...] [--check]]``.

See :mod:`modalrec.experiments.registry` (entries, merge rule) and :mod:`modalrec.experiments.registry_blocks`
(the Markdown blocks).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modalrec.errors import ConfigError
from modalrec.experiments.registry import Entry, check_can_record, data_argument, record_runs, seed_loop
from modalrec.experiments.registry_blocks import default_files, update_files
from modalrec.experiments.results import collect_runs, read_run
from modalrec.experiments.runner import RunSpec


def dataset_name(cfg: dict[str, Any]) -> str:
    """The name a run's dataset will have (the folder's name, or ``synthetic``)."""
    path = str((cfg.get("data") or {}).get("path", "synthetic"))
    return "synthetic" if path == "synthetic" else Path(path).name


def add_registry_options(
    p: argparse.ArgumentParser,
    text: str = "also record the finished runs in this results registry (e.g. results/), one entry per model",
) -> None:
    """``--registry DIR`` and ``--registry-replace`` (compare, ablate, train, report)."""
    p.add_argument("--registry", default=None, metavar="DIR", help=text)
    p.add_argument(
        "--registry-replace",
        dest="registry_replace",
        action="store_true",
        help="replace a registry entry recorded with other settings instead of refusing",
    )


def check_registry(args: argparse.Namespace, specs: list[RunSpec]) -> Path | None:
    """The registry to record in, after refusing (before any training) runs that could not join their entries."""
    if args.registry is None:
        return None
    registry = Path(args.registry)
    if not args.registry_replace:
        for spec in {s.label: s for s in specs}.values():
            cfg = spec.full_config()
            protocol = str(cfg.get("eval", {}).get("protocol") or "standard")
            model = str(cfg["model"]["name"])
            check_can_record(registry, dataset_name(cfg), protocol, spec.label, model, cfg)
    return registry


def _portable(path: str | None) -> str | None:
    """A config path as a reader of the results types it: relative to the current folder when inside it."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def entry_command(
    name: str, args: argparse.Namespace, flags: list[tuple[str, Callable[[Entry], str | None]]]
) -> Callable[[Entry], str]:
    """The command line recorded in a registry entry: the subcommand narrowed to the entry's label and seeds,
    ``--data`` as ``path/to/<dataset>``, without the options that do not change results (``--out``, ``--jobs``)."""

    def command(entry: Entry) -> str:
        parts = ["modalrec", name]
        for flag, value in flags:
            v = value(entry)
            if v is not None:
                parts += [flag, v]
        for ov in getattr(args, "overrides", []):
            parts += ["--set", ov]
        return " ".join(shlex.quote(p) for p in parts)

    return command


def shared_flags(args: argparse.Namespace) -> list[tuple[str, Callable[[Entry], str | None]]]:
    return [
        ("--seeds", lambda e: ",".join(map(str, e.seeds))),
        ("--config", lambda e: _portable(args.config)),
        ("--data", lambda e: data_argument(e.dataset)),
        ("--protocol", lambda e: args.protocol),
    ]


def registry_report(args: argparse.Namespace) -> int:
    """``report --registry DIR [--add RUN_DIR ...] [--readme [FILE ...]] [--check]``."""
    if args.run_dirs or args.out:
        raise ConfigError("with --registry, give run folders with --add RUN_DIR ... (no --out)")
    if args.add is None and args.readme is None:
        raise ConfigError("--registry needs --add RUN_DIR ... and/or --readme [FILE ...]")
    if args.check and args.readme is None:
        raise ConfigError("--check compares Markdown files with the registry: give --readme [FILE ...]")
    registry = Path(args.registry)
    # a mistyped folder would otherwise read as an empty registry
    if args.add is None and not registry.is_dir():
        raise ConfigError(f"{registry}: registry folder does not exist (create it with --add RUN_DIR ...)")
    if args.add is not None:
        records = collect_runs(args.add)
        made_by = args.made_by.strip()
        command = (lambda entry: made_by) if made_by else None
        for path in record_runs(registry, records, command, args.registry_replace):
            print(f"recorded {path}")
    if args.readme is None:
        return 0
    files = [Path(f) for f in args.readme] or default_files()
    blocks, drifted = update_files(files, registry, args.check)
    for line in drifted:
        print(line)
    if args.check:
        if drifted:
            print(
                f"{len(drifted)} of {blocks} results blocks differ from {registry}; regenerate them with "
                f"`modalrec report --registry {args.registry} --readme`"
            )
            return 1
        print(f"{blocks} results blocks in {len(files)} files match {registry}")
        return 0
    print(f"regenerated {len(drifted)} of {blocks} results blocks in {len(files)} files from {registry}")
    return 0


def check_train_run(args: argparse.Namespace, cfg: Any, data_name: str) -> None:
    """``modalrec train --registry DIR``, before training: refuse a run that could not join its entry."""
    if not args.registry_replace:
        name = cfg.model_name
        check_can_record(Path(args.registry), data_name, cfg.eval.protocol, name, name, cfg.to_dict())


def record_train_run(args: argparse.Namespace, run_dir: Path) -> None:
    """``modalrec train --registry DIR``: record the finished run (merging with its other seeds)."""
    parts = ["modalrec", "train", "--model", str(args.model)] if args.model else ["modalrec", "train"]

    def command(entry: Entry) -> str:
        flags = [("--config", _portable(args.config)), ("--data", data_argument(entry.dataset))]
        flags += [("--protocol", args.protocol), ("--split", args.split)]
        line = [*parts, *(x for flag, v in flags if v is not None for x in (flag, v))]
        for ov in args.overrides:
            line += ["--set", ov]
        return seed_loop(line, entry.seeds)

    for path in record_runs(Path(args.registry), [read_run(run_dir)], command, args.registry_replace):
        print(f"recorded {path}")
