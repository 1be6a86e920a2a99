"""Report folder: ``results.csv``, ``table.md``, ``curves.png``, ``groups.png`` and a self-contained ``report.html``.

The HTML embeds the PNGs as base64 data URIs, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modalrec.atomic import atomic_write_text
from modalrec.experiments.plots import plot_groups, plot_validation_curves
from modalrec.experiments.results import RunRecord, collect_runs, results_csv
from modalrec.experiments.tables import (
    comparison_table,
    group_table,
    metric_title,
    reference_table,
    runs_table,
)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``modalrec.atomic``)."""
    atomic_write_text(path, text)


@dataclass
class ReportOptions:
    """What the report shows."""

    title: str = "modalrec experiment"
    command: str = ""  # the command line that produced the runs (printed in table.md and report.html)
    metrics: tuple[str, ...] = ("recall", "precision", "ndcg")
    ks: tuple[int, ...] | None = None  # None: every K in the runs
    curve_metric: str = "recall@20"  # validation curves (Figure 3)
    group_metric: str = "recall@20"  # user-group breakdown (Table 4)
    notes: list[str] = field(default_factory=list)  # extra markdown paragraphs (e.g. failed runs)
    reference: str | None = None  # ablations: compare every variant with this label (the full model)


def describe_protocol(proto: object) -> str:
    """metrics.json "protocol" as one readable phrase."""
    if not isinstance(proto, dict):
        return str(proto)
    bits = [f"`{proto.get('name', '?')}`", f"NDCG {proto.get('ndcg', '?')}"]
    if "mask_val_at_test" in proto:
        bits.append(
            "validation items " + ("masked" if proto["mask_val_at_test"] else "not masked") + " at test"
        )
    bits.append(str(proto.get("ranking", "all items")) + " ranked")
    return ", ".join(bits)


def _protocol_line(records: Sequence[RunRecord]) -> str:
    protos = sorted({describe_protocol(r.metrics.get("protocol")) for r in records})
    datasets = sorted({r.dataset for r in records})
    return f"Dataset: {', '.join(datasets)}. Protocol: {'; '.join(protos)}."


def build_markdown(records: Sequence[RunRecord], opts: ReportOptions) -> str:
    """The text of ``table.md``."""
    parts = [f"# {opts.title}", ""]
    if opts.command:
        parts += ["Command:", "", "```bash", opts.command, "```", ""]
    parts += [
        _protocol_line(records),
        "",
        "Test metrics, mean ± sample std over seeds; best in **bold**, second <u>underlined</u>; improvement = "
        "relative gain of the best mean over the second; p-value = two-sided paired t-test (runs paired by seed) "
        "between the best and the second. Epochs were chosen on validation only.",
        "",
        comparison_table(records, opts.metrics, opts.ks),
    ]
    if opts.reference:
        parts += [reference_table(records, opts.reference, (opts.group_metric, "ndcg@20"))]
    parts += [
        "## By user interaction count (MMSSL Table 4)",
        "",
        group_table(records, opts.group_metric),
        "## Runs",
        "",
        runs_table(records),
    ]
    for note in opts.notes:
        parts += [note, ""]
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Markdown inline subset used by our tables: **bold**, <u>underline</u>, `code`."""
    out = html.escape(text, quote=False)
    out = out.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return out


def markdown_to_html(md: str) -> str:
    """The small markdown subset of :func:`build_markdown`: headings, pipe tables, fenced code, paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            block = []
            while j < len(lines) and not lines[j].startswith("```"):
                block.append(lines[j])
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(block)) + "</code></pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-:") for c in r)]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>")
            for r in body:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
            continue
        m = re.match(r"^(#+) (.*)$", line)
        if m:
            level = min(6, len(m.group(1)))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
figure { margin: 1.5em 0; } figcaption { font-size: 13px; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def html_page(title: str, markdown: str, images: Sequence[tuple[Path, str]]) -> str:
    """A self-contained page: the markdown (as HTML) then each PNG embedded as base64 with its caption."""
    figs = []
    for path, caption in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figs.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + markdown_to_html(markdown)
        + "\n<h2>Figures</h2>\n"
        + "\n".join(figs)
        + "\n</body></html>\n"
    )


def build_report(
    records: Sequence[RunRecord] | Sequence[Path] | Sequence[str],
    out: Path | str,
    opts: ReportOptions | None = None,
    extra_images: Sequence[tuple[Path, str]] = (),
) -> Path:
    """Write the report folder ``out`` from finished runs (records, or folders to search); returns table.md."""
    opts = opts or ReportOptions()
    out = Path(out)
    recs: list[RunRecord]
    if records and not isinstance(records[0], RunRecord):
        recs = collect_runs([Path(str(p)) for p in records])
    else:
        recs = list(records)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.csv", results_csv(recs))
    md = build_markdown(recs, opts)
    atomic_write(out / "table.md", md)
    images: list[tuple[Path, str]] = []
    if plot_validation_curves(recs, out / "curves.png", opts.curve_metric):
        images.append(
            (
                out / "curves.png",
                f"Validation {metric_title(opts.curve_metric)} per epoch (MMSSL Figure 3 analogue); thin lines "
                "are single seeds.",
            )
        )
    if plot_groups(recs, out / "groups.png", opts.group_metric):
        images.append(
            (
                out / "groups.png",
                f"Test {metric_title(opts.group_metric)} by number of training interactions of the user "
                "(MMSSL Table 4 analogue).",
            )
        )
    images += list(extra_images)
    atomic_write(out / "report.html", html_page(opts.title, md, images))
    return out / "table.md"


__all__ = ["ReportOptions", "build_markdown", "build_report", "collect_runs", "markdown_to_html"]
