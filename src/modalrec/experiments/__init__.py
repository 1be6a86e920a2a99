"""Experiments: multi-seed comparisons with significance tests, ablations, user-group breakdowns,
hyper-parameter search, plots and self-contained reports (the papers' Tables 2-4 and Figures 3-4).

Command line: ``modalrec compare``, ``modalrec ablate``, ``modalrec tune``, ``modalrec report``
(see :mod:`modalrec.experiments.commands`). Python API: :func:`run_grid`, :func:`build_report`, :func:`tune`.
"""

from __future__ import annotations

from modalrec.experiments.report import build_report, collect_runs
from modalrec.experiments.runner import RunSpec, run_grid
from modalrec.experiments.stats import paired_ttest, relative_improvement, summarize
from modalrec.experiments.tune import tune

__all__ = [
    "RunSpec",
    "build_report",
    "collect_runs",
    "paired_ttest",
    "relative_improvement",
    "run_grid",
    "summarize",
    "tune",
]
