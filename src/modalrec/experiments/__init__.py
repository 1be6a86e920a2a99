"""Experiments: multi-seed comparisons with significance tests, ablations, user-group breakdowns,
hyper-parameter search, plots and self-contained reports (the papers' Tables 2-4 and Figures 3-4).

Command line: ``modalrec compare``, ``modalrec ablate``, ``modalrec tune``, ``modalrec report``
(see :mod:`modalrec.experiments.commands`). Python API: :func:`run_grid`, :func:`build_report`, :func:`tune`.
Published tables come from the results registry (:mod:`modalrec.experiments.registry`): :func:`record_runs`
writes entries, :func:`update_files` regenerates the Markdown blocks.
"""

from __future__ import annotations

from modalrec.experiments.registry import read_entry, record_runs
from modalrec.experiments.registry_blocks import update_files
from modalrec.experiments.report import build_report, collect_runs
from modalrec.experiments.runner import RunSpec, run_grid
from modalrec.experiments.stats import paired_ttest, relative_improvement, summarize
from modalrec.experiments.tune import tune

__all__ = [
    "RunSpec",
    "build_report",
    "collect_runs",
    "paired_ttest",
    "read_entry",
    "record_runs",
    "relative_improvement",
    "run_grid",
    "summarize",
    "tune",
    "update_files",
]
