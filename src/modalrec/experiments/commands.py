"""``modalrec compare | ablate | tune | report``: the experiment subcommands (registered through
``modalrec.cli.EXTENSION_MODULES``).

Experiment config files (``--config``) are run configs with two optional extra sections::

    experiment: {models: [mf, lightgcn, vbpr], seeds: 5, protocol: paper, out: runs/tiktok-table2}
    models: {lightgcn: {n_layers: 3}}      # per-model hyper-parameters
    model: {name: mmssl, n_layers: 2}      # params for that model (without a name: for every model)
    data: {split: ratio}                   # the dataset itself is given with --data PATH
    train: {epochs: 200, patience: 10}
    eval: {ks: [10, 20, 50]}

Command-line options win over the file; ``--set`` overrides apply to every run.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modalrec.config import coerce, merge, names_dataset, no_dataset_error, read_yaml
from modalrec.config_ranges import SEED_LIMIT, Range, arg_int, check_value
from modalrec.errors import ConfigError, ModalrecError
from modalrec.experiments.registry import Entry, record_runs
from modalrec.experiments.registry_commands import (
    add_registry_options,
    check_registry,
    entry_command,
    registry_report,
    shared_flags,
)
from modalrec.experiments.report import ReportOptions, build_report
from modalrec.experiments.results import read_run
from modalrec.experiments.runner import (
    RunOutcome,
    RunSpec,
    available_cores,
    build_run_config,
    run_grid,
    slug,
)

log = logging.getLogger("modalrec.experiments")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="dataset folder, or 'synthetic' for the planted data")
    p.add_argument("--config", default=None, help="experiment or run config YAML")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in every run, e.g. train.epochs=50 (repeatable)",
    )
    p.add_argument(
        "--protocol", default=None, choices=["standard", "paper"], help="evaluation protocol preset"
    )
    p.add_argument("--out", default=None, help="output folder (report + runs/)")


def add_commands(sub: Any) -> dict[str, Any]:
    """Add the experiment subcommands to the ``modalrec`` parser; returns {name: handler}."""
    p = sub.add_parser("compare", help="train models x seeds, then a table with p-values, plots and a report")
    p.add_argument("--models", default=None, help="comma-separated model names")
    p.add_argument(
        "--seeds", default=None, help="number of seeds (0..N-1) or a comma-separated list (default 5)"
    )
    p.add_argument(
        "--jobs", type=arg_int(1, 1024), default=None, help="concurrent trainings (default: number of cores)"
    )
    _add_common(p)
    add_registry_options(p)

    p = sub.add_parser("ablate", help="train a model and its ablation variants x seeds (Table 3)")
    p.add_argument("--model", required=True, help="model with registered variants (see `modalrec models`)")
    p.add_argument("--variants", default=None, help="comma-separated subset of the variants (default all)")
    p.add_argument("--seeds", default=None, help="number of seeds or a comma-separated list (default 5)")
    p.add_argument(
        "--jobs", type=arg_int(1, 1024), default=None, help="concurrent trainings (default: number of cores)"
    )
    _add_common(p)
    add_registry_options(p)

    p = sub.add_parser("tune", help="Optuna search on validation; test reported once for the chosen config")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--trials",
        type=arg_int(1, 1_000_000),
        required=True,
        help="number of trials (a resumed study counts its own)",
    )
    p.add_argument("--space", default=None, help="search space YAML (default: the model's paper ranges)")
    p.add_argument("--seed", type=arg_int(0, SEED_LIMIT - 1), default=0)
    p.add_argument(
        "--threads", type=arg_int(1, 4096), default=None, help="torch threads per trial (default: all cores)"
    )
    _add_common(p)

    p = sub.add_parser(
        "report",
        help="rebuild a report from finished runs; record runs in, or render tables from, a results registry",
    )
    p.add_argument("run_dirs", nargs="*", help="run folders or folders containing them (report folder mode)")
    p.add_argument("--out", default=None, help="report folder")
    p.add_argument("--title", default="modalrec report")
    p.add_argument("--reference", default=None, help="label to compare every other label with (ablations)")
    p.add_argument(
        "--made-by",
        dest="made_by",  # not "command": that attribute holds the subcommand name
        default="",
        help="the command that produced the runs, shown in the report and recorded in registry entries",
    )
    add_registry_options(p, "results registry folder (e.g. results/) for --add and --readme")
    p.add_argument(
        "--add",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="record these finished runs (or every run under these folders) in --registry",
    )
    p.add_argument(
        "--readme",
        nargs="*",
        default=None,
        metavar="FILE",
        help="regenerate the results blocks of these Markdown files from --registry (default: README.md, docs/)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="with --readme: write nothing; exit 1 listing every block that differs from the registry",
    )
    return {"compare": cmd_compare, "ablate": cmd_ablate, "tune": cmd_tune, "report": cmd_report}


# ---- config plumbing ------------------------------------------------------------------------------------------


def _split_config(path: str | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(run-config base, experiment section, per-model params) from an experiment YAML."""
    raw = read_yaml(path) if path else {}
    experiment = raw.pop("experiment", {}) or {}
    per_model = raw.pop("models", {}) or {}
    if not isinstance(experiment, dict) or not isinstance(per_model, dict):
        raise ConfigError(f"{path}: 'experiment' and 'models' must be mappings")
    return raw, experiment, per_model


def _seeds(value: Any) -> list[int]:
    if value is None:
        return list(range(5))
    if isinstance(value, list):
        return [int(v) for v in value]
    text = str(value)
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise ConfigError(f"--seeds expects a number or a comma-separated list, got {text!r}") from None
    if n < 1:
        raise ConfigError("--seeds must be >= 1")
    return list(range(n))


def _model_params(base: dict[str, Any], per_model: dict[str, Any], model: str) -> dict[str, Any]:
    section = base.get("model") or {}
    if isinstance(section, str):
        section = {"name": section}
    params: dict[str, Any] = {}
    if section.get("name") in (None, model):
        params.update({k: v for k, v in section.items() if k != "name"})
    params.update(per_model.get(model) or {})
    return params


def _base_config(
    args: argparse.Namespace, base: dict[str, Any], experiment: dict[str, Any]
) -> dict[str, Any]:
    base = {k: v for k, v in base.items() if k not in ("model", "seed")}
    data = args.data or experiment.get("data")
    if args.config and not data and not names_dataset(base, args.overrides):
        raise no_dataset_error(args.config)
    if data:
        base = merge(base, {"data": {"path": str(data)}})
    protocol = args.protocol or experiment.get("protocol")
    if protocol:
        base = merge(base, {"eval": {"protocol": protocol}})
    return base


def _data_name(base: dict[str, Any]) -> str:
    path = str((base.get("data") or {}).get("path", "synthetic"))
    return Path(path).name or "data"


def _command_line(name: str, args: argparse.Namespace, keys: list[str]) -> str:
    parts = ["modalrec", name]
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    for ov in getattr(args, "overrides", []):
        parts += ["--set", ov]
    return " ".join(shlex.quote(p) for p in parts)


def _print_outcome(o: RunOutcome) -> None:
    extra = ""
    if o.status == "failed":
        extra = f": {o.error}"
    elif o.status != "reused":
        try:
            test = read_run(o.spec.run_dir).metrics["test"]
            extra = f" ({o.seconds:.0f}s) test recall@20={test.get('recall@20', float('nan')):.4f}"
        except ModalrecError:
            pass
    print(f"{o.status:8s} {o.spec.label} seed {o.spec.seed} -> {o.spec.run_dir}{extra}", flush=True)


def _run_and_report(
    specs: list[RunSpec],
    jobs: int | None,
    out: Path,
    opts: ReportOptions,
    labels: list[str],
    registry: Path | None = None,
    registry_command: Callable[[Entry], str] | None = None,
    replace: bool = False,
) -> int:
    # Seed-major order: an interrupted grid still has every model with its first seeds.
    specs = sorted(specs, key=lambda s: (s.seed, labels.index(s.label)))
    outcomes = run_grid(specs, jobs, on_done=_print_outcome)
    ok = [o for o in outcomes if o.status != "failed"]
    failed = [o for o in outcomes if o.status == "failed"]
    if not ok:
        raise ModalrecError(f"every run failed; first: {failed[0].spec.run_dir}: {failed[0].error}")
    for o in failed:
        opts.notes.append(f"FAILED: {o.spec.label} seed {o.spec.seed} ({o.spec.run_dir}): {o.error}")
    records = [read_run(o.spec.run_dir) for o in ok]
    order = {lab: i for i, lab in enumerate(labels)}
    records.sort(key=lambda r: (order.get(r.label, len(order)), r.seed))
    table = build_report(records, out, opts)
    print(table.read_text(encoding="utf-8").split("## By user")[0].split("Epochs were chosen")[-1].strip())
    print(f"report: {out / 'report.html'} (table.md, results.csv, curves.png, groups.png)")
    if registry is not None:
        for path in record_runs(registry, records, registry_command, replace):
            print(f"recorded {path}")
    if failed:
        print(f"{len(failed)} run(s) failed; see driver.log in their folders")
        return 1
    return 0


# ---- handlers -------------------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    """Train every model x seed (finished runs reused) and write the comparison report."""
    from modalrec.models import MODELS

    base_raw, experiment, per_model = _split_config(args.config)
    models_value = args.models or experiment.get("models")
    if not models_value:
        raise ConfigError("compare needs --models a,b,c (or experiment.models in --config)")
    models = models_value.split(",") if isinstance(models_value, str) else list(models_value)
    models = [m.strip() for m in models if m.strip()]
    for m in models:
        if m not in MODELS:
            raise ConfigError(f"unknown model {m!r}; available: {', '.join(MODELS)}")
    if len(set(models)) != len(models):
        raise ConfigError("--models lists a model twice")
    seeds = _seeds(args.seeds if args.seeds is not None else experiment.get("seeds"))
    base = _base_config(args, base_raw, experiment)
    out = Path(args.out or experiment.get("out") or f"runs/compare-{_data_name(base)}")
    specs = []
    for m in models:
        cfg = build_run_config(base, m, _model_params(base_raw, per_model, m), args.overrides)
        for s in seeds:
            specs.append(RunSpec(m, s, _copy(cfg), out / "runs" / slug(m) / f"seed{s}", group=m))
    jobs = _jobs(args.jobs, experiment.get("jobs"))
    registry = check_registry(args, specs)
    opts = ReportOptions(
        title=f"Comparison on {_data_name(base)}",
        command=_command_line("compare", args, ["models", "data", "seeds", "config", "protocol", "out"]),
    )
    command = entry_command("compare", args, [("--models", lambda e: e.label), *shared_flags(args)])
    return _run_and_report(specs, int(jobs), out, opts, models, registry, command, args.registry_replace)


def cmd_ablate(args: argparse.Namespace) -> int:
    """Train a model and its registered ablation variants x seeds, then the Table 3 style report."""
    from modalrec.models import MODELS

    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; available: {', '.join(MODELS)}")
    variants: dict[str, dict[str, Any]] = dict(MODELS[args.model].variants)
    if not variants:
        with_variants = [n for n, c in MODELS.items() if c.variants]
        raise ConfigError(
            f"{args.model} has no ablation variants; models with variants: {', '.join(with_variants)}"
        )
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            raise ConfigError(
                f"unknown variant(s) {unknown} of {args.model}; variants: {', '.join(variants)}"
            )
        variants = {v: variants[v] for v in wanted}
    base_raw, experiment, per_model = _split_config(args.config)
    seeds = _seeds(args.seeds if args.seeds is not None else experiment.get("seeds"))
    base = _base_config(args, base_raw, experiment)
    out = Path(args.out or experiment.get("out") or f"runs/ablate-{args.model}-{_data_name(base)}")
    params = _model_params(base_raw, per_model, args.model)
    labels = [*variants, args.model]
    specs = []
    for label in labels:
        overrides = variants.get(label, {})
        cfg = build_run_config(base, args.model, {**params, **overrides}, args.overrides)
        for s in seeds:
            specs.append(
                RunSpec(label, s, _copy(cfg), out / "runs" / slug(label) / f"seed{s}", group=args.model)
            )
    jobs = _jobs(args.jobs, experiment.get("jobs"))
    registry = check_registry(args, specs)
    opts = ReportOptions(
        title=f"Ablation of {args.model} on {_data_name(base)}",
        reference=args.model,
        command=_command_line(
            "ablate", args, ["model", "variants", "data", "seeds", "config", "protocol", "out"]
        ),
    )
    flags: list[tuple[str, Callable[[Entry], str | None]]] = [
        ("--model", lambda e: args.model),
        ("--variants", lambda e: e.label if e.label != args.model else args.variants),
        *shared_flags(args),
    ]
    command = entry_command("ablate", args, flags)
    return _run_and_report(specs, int(jobs), out, opts, labels, registry, command, args.registry_replace)


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna search; prints the chosen configuration, its validation score and its test metrics (once)."""
    from modalrec.experiments.tune import read_space, require_optuna, tune

    require_optuna()  # before any file is read, so a missing extra is the one error shown
    base_raw, experiment, per_model = _split_config(args.config)
    if experiment or per_model:
        raise ConfigError("tune takes a run config (no 'experiment' or 'models' sections)")
    if args.config and args.data is None and not names_dataset(base_raw, args.overrides):
        raise no_dataset_error(args.config)
    data = args.data or str((base_raw.get("data") or {}).get("path", "synthetic"))
    space = read_space(args.space) if args.space else None
    out = Path(args.out or f"runs/tune-{args.model}-{Path(data).name}")
    result = tune(
        args.model,
        args.data,
        args.trials,
        out,
        space=space,
        config=args.config,
        overrides=args.overrides,
        seed=args.seed,
        protocol=args.protocol,
        threads=args.threads or available_cores(),
        command=_command_line(
            "tune", args, ["model", "data", "trials", "space", "config", "protocol", "out"]
        ),
    )
    print(f"best: {result.best_params} (validation {result.best_value:.4f})")
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result.test.items() if k.endswith("@20"))
    print(f"test of the chosen configuration: {shown}")
    print(
        f"report: {out / 'tune.md'}, {out / 'report.html'}, {out / 'sensitivity.png'}; config: {out / 'best.yaml'}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild a report folder from existing run folders; or record runs in / render tables from a registry."""
    if args.registry is not None:
        return registry_report(args)
    if args.add is not None or args.readme is not None or args.check:
        raise ConfigError("--add, --readme and --check work on a results registry: give --registry DIR")
    if not args.run_dirs or not args.out:
        raise ConfigError("report needs run folders and --out DIR (or --registry DIR with --add or --readme)")
    opts = ReportOptions(title=args.title, reference=args.reference, command=args.made_by)
    table = build_report(args.run_dirs, Path(args.out), opts)
    print(f"wrote {table}, {Path(args.out) / 'report.html'}")
    return 0


def _copy(cfg: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(cfg)


def _jobs(flag: int | None, configured: object) -> int:
    """``--jobs``, else the experiment file's ``jobs``, else the number of cores; checked to be in [1, 1024]."""
    if flag is not None:
        return flag
    if configured is None:
        return available_cores()
    jobs = int(coerce(configured, int, "jobs"))
    check_value("jobs", jobs, Range(1, 1024))
    return jobs
