"""The ``modalrec`` command line. ``main(argv)`` is the only place that reads arguments.

User mistakes (bad files, bad configuration, unknown ids) print one ``error: ...`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalrec.config_ranges import SEED_LIMIT, arg_int
from modalrec.errors import ModalrecError
from modalrec.runtime import tune_allocator
from modalrec.version import package_version

log = logging.getLogger("modalrec")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (see `modalrec models`); may come from --config")
    p.add_argument(
        "--data", default=None, help="dataset folder, or 'synthetic' (default) for the planted data"
    )
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.epochs=50 or model.n_layers=2 (repeatable)",
    )
    p.add_argument(
        "--device", default=None, choices=["auto", "cpu", "cuda"], help="where to train (default auto)"
    )
    p.add_argument(
        "--seed",
        type=arg_int(0, SEED_LIMIT - 1),
        default=None,
        help="seed for splits, sampling and initialisation",
    )
    p.add_argument(
        "--protocol", default=None, choices=["standard", "paper"], help="evaluation protocol preset"
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["ratio", "loo", "temporal", "cold-start"],
        help="how to split a dataset that ships no split (default ratio 8:1:1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modalrec", description="Multi-modal recommendation: train, evaluate and serve recommenders."
    )
    parser.add_argument("--version", action="version", version=f"modalrec {package_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print results and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model with validation early stopping, then test once")
    _add_run_options(p)
    p.add_argument("--out", default=None, help="run folder (default runs/<model>_<data>_seed<N>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")
    p.add_argument(
        "--ddp",
        type=arg_int(0, 1024),
        default=0,
        metavar="N",
        help="train data-parallel on N local processes (torchrun; gloo on CPU, nccl on GPU)",
    )
    from modalrec.experiments.registry_commands import add_registry_options

    add_registry_options(p)

    p = sub.add_parser("evaluate", help="re-evaluate a saved run")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--data", default=None, help="dataset folder if it moved since training")
    p.add_argument("--protocol", default=None, choices=["standard", "paper"])
    p.add_argument("--split", default="test", choices=["val", "test"], help="which split to evaluate")

    p = sub.add_parser("recommend", help="top-K items for a user, in raw ids")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--user", required=True, action="append", help="raw user id (repeatable)")
    p.add_argument("--k", type=arg_int(1, 100_000), default=20)
    p.add_argument("--data", default=None, help="dataset folder if it moved since training")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the user's training items")
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("models", help="list every model, its modalities and default hyper-parameters")

    p = sub.add_parser(
        "demo", help="does content help? ID-only vs multi-modal models on planted data (about 2 minutes)"
    )
    p.add_argument("--models", default=None, help="comma-separated models (default: a representative set)")
    p.add_argument("--epochs", type=arg_int(0, 1_000_000), default=200, help="most epochs (early stopping)")
    p.add_argument("--threads", type=arg_int(0, 1024), default=1, help="torch CPU threads (0 = all cores)")
    p.add_argument("--out", default="runs/demo")

    _add_data_commands(sub)
    _register_extensions(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """``modalrec data stats|validate|convert|split|synth``."""
    data = sub.add_parser("data", help="inspect, check, convert, split or generate datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, text in (
        ("stats", "print counts, density and modalities"),
        ("validate", "check a dataset folder"),
    ):
        q = dsub.add_parser(name, help=text)
        q.add_argument("path")
        q.add_argument("--format", default="auto", choices=["auto", "canonical", "mmssl", "mmrec"])
        q.add_argument("--json", action="store_true")
    q = dsub.add_parser("convert", help="write any supported format as the canonical folder format")
    q.add_argument("path")
    q.add_argument("--out", required=True)
    q.add_argument("--format", default="auto", choices=["auto", "canonical", "mmssl", "mmrec"])
    q.add_argument("--overwrite", action="store_true")
    q = dsub.add_parser("split", help="split interactions and write a canonical folder with split/")
    q.add_argument("path")
    q.add_argument("--out", required=True)
    q.add_argument("--method", default="ratio", choices=["ratio", "loo", "temporal"])
    q.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val,test shares")
    q.add_argument("--seed", type=arg_int(0, SEED_LIMIT - 1), default=0)
    q.add_argument("--overwrite", action="store_true")
    q = dsub.add_parser("synth", help="generate the planted synthetic dataset")
    q.add_argument("--out", required=True)
    q.add_argument("--users", type=int, default=3000)
    q.add_argument("--items", type=int, default=2000)
    q.add_argument("--interactions", type=int, default=60000)
    q.add_argument("--seed", type=arg_int(0, SEED_LIMIT - 1), default=0)
    q.add_argument("--overwrite", action="store_true")


# Modules that add their own subcommands: each defines ``add_commands(subparsers) -> dict[name, handler]``
# where a handler takes the parsed namespace and returns an exit code. Keeps cli.py small as features grow.
EXTENSION_MODULES: tuple[str, ...] = (
    "modalrec.serving.commands",
    "modalrec.features.commands",
    "modalrec.experiments.commands",
)
_EXTENSION_HANDLERS: dict[str, Any] = {}


def _register_extensions(sub: Any) -> None:
    import importlib

    for module_name in EXTENSION_MODULES:
        module = importlib.import_module(module_name)
        _EXTENSION_HANDLERS.update(module.add_commands(sub))


# ---- commands -------------------------------------------------------------------------------------------------


def _run_config(args: argparse.Namespace) -> Any:
    from modalrec.config import load_config, names_dataset, no_dataset_error, read_yaml

    if args.model is None:
        named = False
        if args.config:
            raw = read_yaml(args.config).get("model")
            named = isinstance(raw, str) or (isinstance(raw, dict) and "name" in raw)
        if not named:
            raise ModalrecError("name the model with --model NAME (or model: {name: ...} in --config)")
    overrides = list(args.overrides)
    if getattr(args, "split", None):
        overrides.append(f"data.split={args.split}")
    cfg = load_config(
        args.config,
        overrides,
        model_name=args.model,
        data_path=args.data,
        seed=args.seed,
        device=args.device,
        protocol=args.protocol,
    )
    if args.config and args.data is None and not names_dataset(read_yaml(args.config), overrides):
        raise no_dataset_error(args.config)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from modalrec.train import Trainer, default_run_dir

    if args.ddp:
        from modalrec.distributed import launch

        return launch(args.ddp, _without_ddp(args.argv))

    cfg = _run_config(args)
    if args.resume and not args.out:
        raise ModalrecError("--resume needs --out pointing at the interrupted run folder")
    if args.out:
        from modalrec.run_folder import check_out

        check_out(Path(args.out), cfg, args.resume, args.overwrite)  # before anything is built or written
    trainer = Trainer(cfg, out=None, resume=args.resume)
    trainer.out = Path(args.out) if args.out else default_run_dir(cfg, trainer.data.name)
    if args.registry and trainer.primary:
        from modalrec.experiments.registry_commands import check_train_run

        check_train_run(args, cfg, trainer.data.name)  # refuse now rather than after training
    result = trainer.fit()
    if result.primary:  # data-parallel ranks > 0 report nothing
        _print_result(result.metrics, result.run_dir)
        if args.registry and result.run_dir is not None:
            from modalrec.experiments.registry_commands import record_train_run

            record_train_run(args, result.run_dir)
    return 0


def _without_ddp(argv: list[str]) -> list[str]:
    """The train arguments minus ``--ddp N`` / ``--ddp=N`` (each rank runs a plain ``train``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ddp":
            skip = True
        elif not arg.startswith("--ddp="):
            out.append(arg)
    return out


def _print_result(metrics: dict[str, Any], run_dir: Path | None) -> None:
    test = metrics["test"]
    keys = [k for k in test if "@" in k and k.split("@")[1] == "20"] or [k for k in test if "@" in k]
    print(
        f"{metrics['model']} on {metrics['dataset']}: best epoch {metrics['best_epoch']}, "
        f"{metrics['epochs_run']} epochs, {metrics['train_seconds']:.1f}s"
    )
    print("test  " + "  ".join(f"{k}={test[k]:.4f}" for k in keys))
    if run_dir is not None:
        print(f"run folder: {run_dir}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from modalrec.config import config_from_dict
    from modalrec.evaluate import evaluate
    from modalrec.recommend import load_run

    model, data, raw = load_run(args.run, args.data)
    cfg = config_from_dict(raw)
    if args.protocol:
        cfg.eval.protocol = args.protocol
    result = evaluate(model, data, args.split, cfg.eval)
    print(json.dumps({"split": args.split, "protocol": cfg.eval.describe(), "metrics": result}, indent=2))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from modalrec.recommend import Recommender

    rec = Recommender.from_run(args.run, args.data)
    lists = rec.recommend(args.user, k=args.k, exclude_seen=not args.include_seen)
    if args.json:
        print(
            json.dumps(
                {
                    u: [{"item": i, "score": s} for i, s in items]
                    for u, items in zip(args.user, lists, strict=True)
                }
            )
        )
    else:
        for user, items in zip(args.user, lists, strict=True):
            print(f"user {user}: " + " ".join(i for i, _ in items))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from modalrec.models import MODELS

    for name, cls in MODELS.items():
        mods = (
            cls.modalities if isinstance(cls.modalities, str) else (", ".join(cls.modalities) or "none (IDs)")
        )
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:12s} modalities: {mods:12s} {doc}")
        defaults = {f.name: getattr(cls.Config(), f.name) for f in dataclasses.fields(cls.Config)}
        print("             defaults: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
        if cls.variants:
            print("             variants: " + ", ".join(cls.variants))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from modalrec.demo import run_demo

    models = args.models.split(",") if args.models else None
    print(run_demo(models, epochs=args.epochs, out=Path(args.out), threads=args.threads))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from modalrec.data import load_dataset, save_dataset

    action = args.data_command
    if action in ("stats", "validate"):
        data = load_dataset(args.path, args.format)
        stats = data.stats()
        if action == "validate":
            print(
                f"ok: {args.path} is a valid dataset ({stats['users']} users, {stats['items']} items, "
                f"{stats['interactions']} interactions, modalities {list(data.features) or 'none'})"
            )
            for line in _missing_lines(data):
                print(line)
        elif args.json:
            print(json.dumps(stats, indent=2))
        else:
            for k, v in stats.items():
                print(f"{k:13s} {v}")
        return 0
    if action == "convert":
        out = save_dataset(load_dataset(args.path, args.format), args.out, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    if action == "split":
        return _data_split(args)
    if action == "synth":
        return _data_synth(args)
    raise AssertionError(action)


def _missing_lines(data: Any) -> list[str]:
    """One line per modality that some items lack, and one for items without any content."""
    lines = []
    for name, count in data.stats()["missing_items"].items():
        if count:
            lines.append(f"missing: {count} of {data.n_items} items lack '{name}'")
    cold = int(data.items_without_content().sum())
    if cold:
        lines.append(
            f"missing: {cold} of {data.n_items} items have no content at all (they rely on ID embeddings)"
        )
    return lines


def _data_split(args: argparse.Namespace) -> int:
    from modalrec.data import load_dataset, save_dataset
    from modalrec.data.io import SplitOptions, read_interactions_csv, validate_splits

    parts = _ratios(args.ratios)
    ratios = (parts[0], parts[1], parts[2])
    src = Path(args.path)
    if (src / "split").exists():
        # Re-split a folder that ships a split: pool its interactions first.
        from modalrec.data.dataset import Dataset
        from modalrec.data.split import split_interactions

        pooled = load_dataset(src)
        coo = (pooled.train + pooled.val + pooled.test).tocoo()
        tr, va, te = split_interactions(
            coo.row, coo.col, pooled.n_users, pooled.n_items, args.method, ratios, args.seed
        )
        data = Dataset(
            pooled.name, pooled.user_ids, pooled.item_ids, tr, va, te, pooled.features, pooled.feature_masks
        )
        validate_splits(data, src)  # never write a dataset that `data validate` would reject
    else:
        read_interactions_csv(src / "interactions.csv")  # fail early with a clear message
        data = load_dataset(src, "canonical", SplitOptions(args.method, ratios, args.seed))
    out = save_dataset(data, args.out, overwrite=args.overwrite)
    print(f"wrote {out} ({data.train.nnz}/{data.val.nnz}/{data.test.nnz} train/val/test)")
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from modalrec.config_ranges import SYNTHETIC, check_value
    from modalrec.data import SyntheticConfig, make_synthetic, save_dataset

    for flag, field_name in (
        ("--users", "n_users"),
        ("--items", "n_items"),
        ("--interactions", "n_interactions"),
    ):
        check_value(flag, getattr(args, flag[2:]), SYNTHETIC[field_name])
    cfg = SyntheticConfig(
        n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=args.seed
    )
    out = save_dataset(make_synthetic(cfg), args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _ratios(text: str) -> list[float]:
    """``--ratios a,b,c``: three finite shares in [0, 1] with a positive train share."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise ModalrecError(f"--ratios needs three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3:
        raise ModalrecError(f"--ratios needs three numbers, got {text!r}")
    if not all(0.0 <= p <= 1.0 for p in parts) or parts[0] <= 0.0:
        raise ModalrecError(f"--ratios shares must be in [0, 1] with a positive train share, got {text!r}")
    return parts


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "models": cmd_models,
    "demo": cmd_demo,
    "data": cmd_data,
}


MAX_ERROR_CHARS = 1000
OUT_OF_MEMORY = (
    "out of memory: a setting asks for more than this machine has (model or data sizes, eval.chunk_size); "
    "lower it, or set MODALREC_MEMORY_BUDGET to what this machine has"
)


def _error(message: str) -> int:
    """Print one ``error:`` line (whitespace collapsed, long values cut) and return exit code 2."""
    text = " ".join(message.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 15] + " ... (cut)"
    print(f"error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modalrec`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed by argparse)
        return exc.code if isinstance(exc.code, int) else 2
    raw = list(sys.argv[1:] if argv is None else argv)
    args.argv = raw[raw.index(args.command) + 1 :] if args.command in raw else raw
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for log_handler in logging.getLogger().handlers:
        log_handler.setLevel(
            level
        )  # records of INFO-level loggers still propagate here; -q must silence them
    tune_allocator()  # process-level tuning belongs to the process owner; MODALREC_MALLOC_TUNING=0 opts out
    try:
        command = COMMANDS.get(args.command) or _EXTENSION_HANDLERS[args.command]
        return int(command(args))
    except ModalrecError as exc:
        return _error(str(exc))
    except OSError as exc:
        # The environment, not the input: a full disk, a file size limit, a permission, a symlink loop, a busy port.
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'OSError')})")
    except MemoryError:
        return _error(OUT_OF_MEMORY)
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc) and "not enough memory" not in str(exc):
            raise  # a bug: keep the traceback
        return _error(OUT_OF_MEMORY)  # torch reports a failed allocation as RuntimeError
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
