"""The layers of the package, lowest first: the one place that states which way imports may point.

A module may import modules of its own layer or of a lower one, never of a higher one, and the import graph has
no cycle (tests/test_architecture.py builds it from the source and checks both). docs/architecture.md draws it.

Entries are module names relative to ``modalrec``; a package name covers all of its modules.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # plain building blocks with no knowledge of recommendation data or models
    ("foundation", ("errors", "fields", "runtime", "dispatch", "atomic", "checkpoint", "optim", "metrics",
                    "losses", "ema", "plots", "layers")),
    # datasets: reading, splitting, sampling, synthetic data, content features
    ("data", ("data", "features")),
    # graph construction and sparse kernels
    ("graph", ("graph",)),
    # the model contract, every model, the registry and model construction
    ("models", ("models",)),
    # the run configuration (it validates model names and hyper-parameters against the registry)
    ("config", ("config", "config_ranges")),
    # training, evaluation and loading trained runs
    ("training", ("run_folder", "callbacks", "health", "distributed", "train", "evaluate", "recommend")),
    # what users run: experiments, the service, the command line and the package's public face
    ("applications", ("experiments", "serving", "cli", "demo", "api", "version", "__init__", "__main__")),
)  # fmt: skip


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of a module given as ``modalrec.a.b`` (KeyError when no layer claims it)."""
    parts = module.split(".")
    assert parts[0] == "modalrec"
    name = parts[1] if len(parts) > 1 else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if name in members:
            return index
    raise KeyError(f"{module} belongs to no layer in modalrec.layers.LAYERS")
