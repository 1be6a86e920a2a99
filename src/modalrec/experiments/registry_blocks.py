"""Result tables in Markdown files, regenerated from the results registry between marker comments.

A block is an opening marker, the generated text, and a closing marker, each marker on its own line::

    <!-- results dataset=tiktok protocol=paper models=lightgcn,vbpr,mmssl metrics=recall@20,ndcg@20 reference=mmssl -->
    (generated: do not edit)
    <!-- /results -->

Attributes of the opening marker (``key=value``, separated by spaces, no spaces inside a value):

* ``table``: ``metrics`` (default) or ``speed``.
* ``dataset``, ``protocol``: which registry folder the rows come from (``<registry>/<dataset>/<protocol>/``).
* ``models``: comma-separated entries, in row order, each named by its label or by its file name without
  ``.json`` (``w/o contrast`` is ``wo-contrast``); default: every entry of that folder, by label.
* ``metrics``: comma-separated test metrics, e.g. ``recall@20,ndcg@20`` (the default); metrics table only.
* ``reference``: an entry (named as in ``models``); adds the two-sided paired t-test p-value of each row
  against it on the first metric, over the seeds both share.
* ``published``: ``yes`` (default) shows the published figure beside each metric where
  ``<registry>/published.json`` has one for that dataset, protocol and model; ``no`` hides it.
* ``digits``: decimals of the metric cells (default 4).

The metrics table shows mean ± sample std over seeds (the bare value for one seed) and the number of seeds; the
speed table shows the median seconds per training epoch (median over epochs, then over seeds), the median best
epoch and the machine the times were measured on. Only the text between the markers is ever rewritten.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalrec.atomic import atomic_write_text
from modalrec.errors import ModalrecError
from modalrec.experiments.registry import Entry, read_registry
from modalrec.experiments.stats import paired_ttest, summarize
from modalrec.experiments.tables import format_p, mean_std_text, metric_title, values_by_seed

OPEN = re.compile(r"^<!--\s*results(?P<attrs>(?:\s+[^\s>]+)*)\s*-->\s*$")
CLOSE = re.compile(r"^<!--\s*/results\s*-->\s*$")
KEYS = {"table", "dataset", "protocol", "models", "metrics", "reference", "published", "digits"}
PUBLISHED_FILE = "published.json"


@dataclass
class Block:
    """One marked block of a file: its attributes, the lines it spans and the text between the markers."""

    path: Path
    line: int  # 1-based line of the opening marker
    attrs: dict[str, str]
    start: int  # index of the first line after the opening marker
    end: int  # index of the closing marker line
    text: str
    marker: str = field(default="")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_blocks(path: Path, text: str) -> list[Block]:
    """Every results block of ``text`` (markers inside fenced code are skipped); unknown attributes, nesting and
    unclosed blocks are errors."""
    lines = text.splitlines(keepends=True)
    blocks: list[Block] = []
    current: tuple[int, dict[str, str], str] | None = None
    fence = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if current is None and (fence or stripped.startswith(("```", "~~~"))):
            # markers inside fenced code are examples, not blocks
            if not fence:
                fence = stripped[:3]
            elif stripped.startswith(fence):
                fence = ""
            continue
        m = OPEN.match(stripped)
        if m:
            if current is not None:
                raise ModalrecError(
                    f"{path}:{i + 1}: results block opened inside the block of line {current[0] + 1}"
                )
            current = (i, _attrs(m.group("attrs"), f"{path}:{i + 1}"), stripped)
        elif CLOSE.match(stripped):
            if current is None:
                raise ModalrecError(f"{path}:{i + 1}: '<!-- /results -->' without an opening results marker")
            start, attrs, marker = current
            body = "".join(lines[start + 1 : i])
            blocks.append(Block(path, start + 1, attrs, start + 1, i, body, marker))
            current = None
    if current is not None:
        raise ModalrecError(f"{path}:{current[0] + 1}: results block is not closed with '<!-- /results -->'")
    return blocks


def _attrs(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ModalrecError(f"{where}: results marker attribute {part!r} is not key=value")
        if key not in KEYS:
            raise ModalrecError(
                f"{where}: unknown results marker attribute {key!r}; known: {', '.join(sorted(KEYS))}"
            )
        out[key] = value
    for key in ("dataset", "protocol"):
        if key not in out:
            raise ModalrecError(f"{where}: results marker needs {key}=...")
    if out.get("table", "metrics") not in ("metrics", "speed"):
        raise ModalrecError(f"{where}: table={out['table']!r}; use table=metrics or table=speed")
    if out.get("published", "yes") not in ("yes", "no"):
        raise ModalrecError(f"{where}: published={out['published']!r}; use yes or no")
    if not out.get("digits", "4").isdigit() or not 0 < int(out.get("digits", "4")) <= 8:
        raise ModalrecError(f"{where}: digits={out['digits']!r}; use a number from 1 to 8")
    return out


# ---- published figures ----------------------------------------------------------------------------------------


def read_published(registry: Path) -> dict[str, Any]:
    """``<registry>/published.json``: ``{"sources": {id: citation}, "figures": [{dataset, protocol, model,
    source, <metric>: value, ...}]}`` (empty when the file does not exist)."""
    path = Path(registry) / PUBLISHED_FILE
    if not path.exists():
        return {"sources": {}, "figures": []}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModalrecError(f"{path}: cannot read published figures ({exc})") from None
    sources = raw.get("sources") if isinstance(raw, dict) else None
    figures = raw.get("figures") if isinstance(raw, dict) else None
    if not isinstance(sources, dict) or not isinstance(figures, list):
        raise ModalrecError(f"{path}: needs 'sources' (id -> citation) and 'figures' (a list)")
    for i, fig in enumerate(figures):
        if not isinstance(fig, dict) or not {"dataset", "protocol", "model", "source"} <= fig.keys():
            raise ModalrecError(f"{path}: figure {i} needs dataset, protocol, model and source")
        if fig["source"] not in sources:
            raise ModalrecError(f"{path}: figure {i} cites unknown source {fig['source']!r}")
    return raw


def _published(published: dict[str, Any], dataset: str, protocol: str, model: str) -> dict[str, Any]:
    for fig in published["figures"]:
        if (fig["dataset"], fig["protocol"], fig["model"]) == (dataset, protocol, model):
            return dict(fig)
    return {}


# ---- rendering ------------------------------------------------------------------------------------------------


def _named(entries: dict[str, tuple[Path, Entry]]) -> dict[str, tuple[Path, Entry]]:
    """Entries by label and by file name without ``.json`` (how a label with spaces is named in a marker)."""
    out = {path.stem: (path, entry) for path, entry in entries.values()}
    out.update(entries)
    return out


def _rows(block: Block, registry: Path) -> list[tuple[Path, Entry]]:
    entries = read_registry(registry, block.attrs["dataset"], block.attrs["protocol"])
    named = _named(entries)
    names = block.attrs["models"].split(",") if "models" in block.attrs else sorted(entries)
    missing = [name for name in names if name not in named]
    if missing:
        folder = Path(registry) / block.attrs["dataset"] / block.attrs["protocol"]
        raise ModalrecError(f"{block.where}: no registry entry for {', '.join(missing)} in {folder}")
    if not names:
        raise ModalrecError(
            f"{block.where}: no registry entries for dataset {block.attrs['dataset']} and protocol "
            f"{block.attrs['protocol']}"
        )
    return [named[name] for name in names]


def _reference(block: Block, rows: list[tuple[Path, Entry]]) -> str | None:
    """The label of the block's ``reference`` (named by label or file name), which must be one of its rows."""
    name = block.attrs.get("reference")
    if name is None:
        return None
    for path, entry in rows:
        if name in (entry.label, path.stem):
            return entry.label
    raise ModalrecError(f"{block.where}: reference={name} is not one of the block's models")


def render_metrics(block: Block, registry: Path) -> str:
    """The metrics table of a block (see the module docstring)."""
    rows = _rows(block, registry)
    dataset, protocol = block.attrs["dataset"], block.attrs["protocol"]
    keys = block.attrs.get("metrics", "recall@20,ndcg@20").split(",")
    digits = int(block.attrs.get("digits", "4"))
    records = [rec for path, entry in rows for rec in entry.records(path)]
    published = read_published(registry) if block.attrs.get("published", "yes") == "yes" else None
    # a paper's figure belongs to the model as published, not to an ablation variant of it
    figures = {
        e.label: _published(published, dataset, protocol, e.model) if published and e.label == e.model else {}
        for _, e in rows
    }
    shown = [k for k in keys if any(k in f for f in figures.values())]
    reference = _reference(block, rows)
    head = ["model", "seeds"]
    for k in keys:
        head += [metric_title(k)] + ([f"{metric_title(k)} published"] if k in shown else [])
    if reference:
        head.append(f"p vs {reference} ({metric_title(keys[0])})")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for _, entry in rows:
        cells = [entry.label, str(len(entry.seeds))]
        for k in keys:
            values = values_by_seed(records, entry.label, "test", k)
            if not values:
                raise ModalrecError(f"{block.where}: {entry.label} has no test metric {k}")
            mean, std = summarize(list(values.values()))
            cells.append(mean_std_text(mean, std, len(values), digits))
            if k in shown:
                fig = figures[entry.label].get(k)
                cells.append(f"{float(fig):.{digits}f}" if isinstance(fig, int | float) else "–")
        if reference:
            cells.append(
                "–" if entry.label == reference else format_p(_p(records, entry.label, reference, keys[0]))
            )
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Test metrics on {dataset} (protocol {protocol}): mean ± sample std over seeds"]
    if reference:
        notes.append(f"p: two-sided paired t-test against {reference} over the seeds both have")
    cited = sorted({str(f["source"]) for f in figures.values() if f and any(k in f for k in shown)})
    if cited and published:
        notes.append("published: " + "; ".join(str(published["sources"][c]) for c in cited))
    return "\n" + "\n".join(lines) + "\n\n" + ". ".join(notes) + ".\n\n"


def _p(records: Sequence[Any], label: str, reference: str, key: str) -> float:
    a = values_by_seed(records, label, "test", key)
    b = values_by_seed(records, reference, "test", key)
    common = sorted(set(a) & set(b))
    return paired_ttest([a[s] for s in common], [b[s] for s in common])


def render_speed(block: Block, registry: Path) -> str:
    """The speed table of a block: seconds per epoch, best epoch, epochs run (medians over seeds)."""
    rows = _rows(block, registry)
    lines = [
        "| model | seeds | s/epoch (median) | best epoch (median) | epochs run (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    machines: list[str] = []
    for _, entry in rows:
        best = statistics.median(int(r["best_epoch"]) for r in entry.runs)
        ran = statistics.median(int(r.get("epochs_run", 0)) for r in entry.runs)
        lines.append(
            f"| {entry.label} | {len(entry.seeds)} | {entry.epoch_seconds_median():.2f} | {_num(best)} | {_num(ran)} |"
        )
        for r in entry.runs:
            m = str(r.get("machine", "unknown"))
            if m not in machines:
                machines.append(m)
    where = f"{block.attrs['dataset']} (protocol {block.attrs['protocol']})"
    return (
        "\n"
        + "\n".join(lines)
        + f"\n\nTraining time per epoch on {where}, measured on {'; '.join(machines)}.\n\n"
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def render(block: Block, registry: Path) -> str:
    """The text a block should hold (between its markers)."""
    if block.attrs.get("table", "metrics") == "speed":
        return render_speed(block, registry)
    return render_metrics(block, registry)


# ---- files ----------------------------------------------------------------------------------------------------


def default_files(root: Path = Path(".")) -> list[Path]:
    """README.md and every Markdown file under docs/ (those that exist), below ``root``."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").rglob("*.md"))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModalrecError(f"{path}: cannot read ({exc})") from None


def rendered_file(path: Path, registry: Path) -> tuple[str, list[Block], list[Block]]:
    """(the file's text with every block regenerated, all blocks, the blocks whose text changed)."""
    text = _read(path)
    blocks = parse_blocks(path, text)
    lines = text.splitlines(keepends=True)
    changed = []
    for block in reversed(blocks):  # from the end, so earlier line indices stay valid
        new = render(block, registry)
        if new != block.text:
            changed.append(block)
            lines[block.start : block.end] = [new]
    return "".join(lines), blocks, changed[::-1]


def update_files(files: Sequence[Path], registry: Path, check: bool) -> tuple[int, list[str]]:
    """Regenerate (or with ``check`` only compare) the blocks of ``files``.

    Returns (number of blocks, one line per block whose text differs from what the registry renders). Every
    file is rendered before any is written, so an error in one leaves all of them unchanged; each write is atomic.
    """
    results = [(path, *rendered_file(path, registry)) for path in files]
    drifted = [
        f"{b.where}: {b.marker} differs from the registry" for _, _, _, changed in results for b in changed
    ]
    if not check:
        for path, text, _, changed in results:
            if changed:
                atomic_write_text(path, text)
    return sum(len(blocks) for _, _, blocks, _ in results), drifted
