"""The results registry end to end on tiny synthetic runs: entries written by `compare`/`train --registry` and
`report --add`, the merge rule, Markdown blocks rendered from entries (checked against hand-computed means, sample
stds and paired t-test p-values), `--check` drift detection, bad entries, and the repository's own tables."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import statistics
from pathlib import Path

import pytest
from tests.experiments.test_commands import TINY as COMPARE_TINY

from modalrec.cli import _run_config, build_parser, main
from modalrec.experiments.registry import recorded_config
from modalrec.experiments.registry_blocks import default_files, parse_blocks

TINY = [*COMPARE_TINY, "--set", "train.threads=1"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(compare output folder, registry) after `compare --models mf,lightgcn --seeds 2 --registry`."""
    root = tmp_path_factory.mktemp("registry")
    out, registry = root / "cmp", root / "results"
    argv = ["-q", "compare", "--models", "mf,lightgcn", "--seeds", "2", "--jobs", "1", "--out", str(out)]
    assert main([*argv, *TINY, "--registry", str(registry)]) == 0
    return out, registry


def _run_metric(out: Path, model: str, seed: int, key: str) -> float:
    return float(json.loads((out / "runs" / model / f"seed{seed}" / "metrics.json").read_text())["test"][key])


def _entry(registry: Path, label: str) -> dict:
    return json.loads((registry / "synthetic" / "standard" / f"{label}.json").read_text())


def test_compare_writes_one_entry_per_model(compared: tuple[Path, Path]) -> None:
    out, registry = compared
    assert sorted(p.name for p in (registry / "synthetic" / "standard").iterdir()) == [
        "lightgcn.json",
        "mf.json",
    ]
    e = _entry(registry, "lightgcn")
    assert e["model"] == "lightgcn" and e["seeds"] == [0, 1] and e["protocol"]["name"] == "standard"
    assert e["dataset"]["name"] == "synthetic" and e["dataset"]["users"] == 120 and e["dataset"]["generated"]
    # the synthetic data is generated from the seed, so each seed has its own content and split hash
    hashes = {r["data_sha256"] for r in e["runs"]}
    assert len(hashes) == 2 and all(len(h) == 16 for h in hashes)
    assert e["dataset"]["data_sha256"] is None and e["dataset"]["split_sha256"] is None
    # the summary is the mean and sample std of the runs' own metrics.json values
    vals = [_run_metric(out, "lightgcn", s, "recall@20") for s in (0, 1)]
    mean, std = sum(vals) / 2, abs(vals[0] - vals[1]) / math.sqrt(2)
    assert e["summary"]["test"]["recall@20"]["mean"] == pytest.approx(mean, rel=1e-5)
    assert e["summary"]["test"]["recall@20"]["std"] == pytest.approx(std, rel=1e-4)
    assert e["best_epochs"] == [r["best_epoch"] for r in e["runs"]]
    assert e["epoch_seconds_median"] == pytest.approx(
        statistics.median(r["epoch_seconds_median"] for r in e["runs"]), abs=1e-4
    )
    # the command is what a user types: the compare narrowed to this model and its seeds, no machine paths
    assert e["command"].startswith("modalrec compare --models lightgcn --seeds 0,1 --data synthetic --set ")
    assert "--out" not in e["command"] and "--jobs" not in e["command"]
    assert e["config"]["train"]["epochs"] == 2 and "threads" not in e["config"]["train"]
    assert "path" not in e["config"]["data"] and "seed" not in e["config"]


def test_report_add_imports_the_same_entries(compared: tuple[Path, Path], tmp_path: Path) -> None:
    out, registry = compared
    rc = main(
        ["report", "--registry", str(tmp_path), "--add", str(out / "runs"), "--made-by", "modalrec compare x"]
    )
    assert rc == 0
    for label in ("mf", "lightgcn"):
        new, old = _entry(tmp_path, label), _entry(registry, label)
        assert new["command"] == "modalrec compare x"
        assert {k: v for k, v in new.items() if k != "command"} == {
            k: v for k, v in old.items() if k != "command"
        }
    # without --made-by the entry gets a self-contained train command that reproduces the settings
    assert main(["report", "--registry", str(tmp_path / "b"), "--add", str(out / "runs" / "mf")]) == 0
    cmd = json.loads((tmp_path / "b" / "synthetic" / "standard" / "mf.json").read_text())["command"]
    assert cmd.startswith("for seed in 0 1; do modalrec train --model mf --data synthetic --set ")
    assert cmd.endswith("--seed $seed; done")
    # ... which parses back to exactly the recorded settings
    inner = cmd.split("; do ", 1)[1].removesuffix("; done").replace("$seed", "1")
    args = build_parser().parse_args(shlex.split(inner)[1:])
    entry = json.loads((tmp_path / "b" / "synthetic" / "standard" / "mf.json").read_text())
    assert recorded_config(_run_config(args).to_dict()) == entry["config"]


def test_merge_rule(compared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, registry = compared
    reg = tmp_path / "results"
    shutil.copytree(registry, reg)
    entry = reg / "synthetic" / "standard" / "mf.json"
    # a third seed trained by `train` with the same settings joins the compare's entry
    run = ["-q", "train", "--model", "mf", "--seed", "2", "--out", str(tmp_path / "mf2"), *TINY]
    assert main([*run, "--registry", str(reg)]) == 0
    e = json.loads(entry.read_text())
    assert e["seeds"] == [0, 1, 2] and e["runs"][:2] == _entry(registry, "mf")["runs"]
    assert e["command"].startswith("for seed in 0 1 2; do modalrec train --model mf --data synthetic --set ")
    # other settings are refused before training, naming the difference; nothing is written
    before = entry.read_text()
    other = ["-q", "train", "--model", "mf", "--seed", "3", "--out", str(tmp_path / "mf3"), *TINY]
    capsys.readouterr()
    assert main([*other, "--set", "train.batch_size=256", "--registry", str(reg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "train.batch_size: 512 -> 256" in err
    assert entry.read_text() == before and not (tmp_path / "mf3").exists()
    # ... and importing runs of other settings is refused too, unless the entry is replaced
    assert main(["report", "--registry", str(reg), "--add", str(out / "runs" / "lightgcn" / "seed0")]) == 0
    lg = reg / "synthetic" / "standard" / "lightgcn.json"
    assert json.loads(lg.read_text())["seeds"] == [0, 1]  # seed 0 re-recorded in place, seed 1 kept
    lg.write_text(lg.read_text().replace('"users": 120', '"users": 121', 1))  # as if the data had changed
    capsys.readouterr()
    assert main(["report", "--registry", str(reg), "--add", str(out / "runs" / "lightgcn" / "seed1")]) == 2
    assert "dataset users: 121 -> 120" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    shutil.copytree(out / "runs" / "mf" / "seed0", mixed)
    cfg = (mixed / "config.yaml").read_text().replace("epochs: 2", "epochs: 3")
    (mixed / "config.yaml").write_text(cfg)
    (mixed / "experiment.yaml").unlink()
    capsys.readouterr()
    assert main(["report", "--registry", str(reg), "--add", str(mixed)]) == 2
    assert "train.epochs: 2 -> 3" in capsys.readouterr().err and entry.read_text() == before
    assert main(["report", "--registry", str(reg), "--add", str(mixed), "--registry-replace"]) == 0
    replaced = json.loads(entry.read_text())
    assert replaced["seeds"] == [0] and replaced["config"]["train"]["epochs"] == 3


def test_entries_record_every_hyper_parameter(
    compared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry holds every model setting as the run was built with it, defaults included, so runs made before a
    default changed are not averaged with runs made after it."""
    from modalrec.models.mf import MF

    out, registry = compared
    e = _entry(registry, "mf")
    assert e["config"]["model"] == {"name": "mf", **MF.Config().__dict__}  # nothing set, every field recorded
    metrics = json.loads((out / "runs" / "mf" / "seed0" / "metrics.json").read_text())
    assert metrics["model_config"] == e["config"]["model"]  # what the run itself wrote
    # a run built when a default was different: its metrics.json says so; importing it is refused
    reg = tmp_path / "results"
    shutil.copytree(registry, reg)
    old = tmp_path / "old"
    shutil.copytree(out / "runs" / "mf" / "seed0", old)
    (old / "experiment.yaml").unlink()
    changed = {**metrics["model_config"], "reg_weight": 0.5}
    (old / "metrics.json").write_text(json.dumps({**metrics, "model_config": changed}))
    capsys.readouterr()
    assert main(["report", "--registry", str(reg), "--add", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"model.reg_weight: {MF.Config().reg_weight} -> 0.5" in err
    # a run that predates the record (only the settings it set): the others are read at today's defaults
    (old / "metrics.json").write_text(json.dumps({**metrics, "model_config": {"name": "mf"}}))
    assert main(["report", "--registry", str(reg), "--add", str(old)]) == 0
    assert json.loads((reg / "synthetic" / "standard" / "mf.json").read_text())["config"] == e["config"]


def _p_two_seeds(a: list[float], b: list[float]) -> float:
    """Paired t-test by hand: t = mean(d) / (sd(d) / sqrt(n)); with n = 2 (one degree of freedom, a Cauchy
    distribution) the two-sided p-value is 1 - (2 / pi) * atan(|t|)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    md = sum(d) / 2
    sd = math.sqrt(sum((x - md) ** 2 for x in d))
    t = md / (sd / math.sqrt(2))
    return 1.0 - 2.0 / math.pi * math.atan(abs(t))


def test_block_renders_hand_computed_values(compared: tuple[Path, Path], tmp_path: Path) -> None:
    out, registry = compared
    reg = tmp_path / "results"
    shutil.copytree(registry, reg)
    published = {
        "sources": {"t": "A paper, Table 9"},
        "figures": [
            {
                "dataset": "synthetic",
                "protocol": "standard",
                "model": "lightgcn",
                "source": "t",
                "recall@20": 0.5,
            }
        ],
    }
    (reg / "published.json").write_text(json.dumps(published))
    doc = tmp_path / "README.md"
    marker = (
        "<!-- results dataset=synthetic protocol=standard models=mf,lightgcn metrics=recall@20,ndcg@10 "
        "reference=lightgcn -->"
    )
    doc.write_text(f"# Intro\n\n{marker}\nstale text\n<!-- /results -->\n\nAfter.\n")
    assert main(["report", "--registry", str(reg), "--readme", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Intro\n\n{marker}\n") and text.endswith("<!-- /results -->\n\nAfter.\n")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    header = rows["model"]
    assert "Recall@20 published" in header and "NDCG@10 published" not in header
    assert header.endswith("| p vs lightgcn (Recall@20) |")
    r = {m: [_run_metric(out, m, s, "recall@20") for s in (0, 1)] for m in ("mf", "lightgcn")}
    n = {m: [_run_metric(out, m, s, "ndcg@10") for s in (0, 1)] for m in ("mf", "lightgcn")}

    def cell(v: list[float]) -> str:
        return f"{sum(v) / 2:.4f} ± {abs(v[0] - v[1]) / math.sqrt(2):.4f}"

    p = _p_two_seeds(r["mf"], r["lightgcn"])
    p_text = f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
    assert rows["mf"] == f"| mf | 2 | {cell(r['mf'])} | – | {cell(n['mf'])} | {p_text} |"
    assert (
        rows["lightgcn"] == f"| lightgcn | 2 | {cell(r['lightgcn'])} | 0.5000 | {cell(n['lightgcn'])} | – |"
    )
    assert "published: A paper, Table 9." in text
    # a second run changes nothing; the check passes
    assert main(["report", "--registry", str(reg), "--readme", str(doc), "--check"]) == 0


def test_check_detects_a_drifted_cell(
    compared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, registry = compared
    doc = tmp_path / "page.md"
    speed = "<!-- results table=speed dataset=synthetic protocol=standard -->"
    metrics = "<!-- results dataset=synthetic protocol=standard models=mf -->"
    doc.write_text(f"{speed}\n<!-- /results -->\ntext\n{metrics}\n<!-- /results -->\n")
    assert main(["report", "--registry", str(registry), "--readme", str(doc)]) == 0
    good = doc.read_text()
    assert "| lightgcn | 2 |" in good and "| mf | 2 |" in good and "s/epoch (median)" in good
    mf_line = next(line for line in good.splitlines() if line.startswith("| mf | 2 | 0.") and "±" in line)
    drifted = good.replace(mf_line, mf_line.replace("| mf | 2 | 0.", "| mf | 2 | 1.", 1))
    doc.write_text(drifted)
    capsys.readouterr()
    assert main(["report", "--registry", str(registry), "--readme", str(doc), "--check"]) == 1
    out = capsys.readouterr().out
    line_no = drifted.splitlines().index(metrics) + 1
    assert f"{doc}:{line_no}: {metrics} differs from the registry" in out and "1 of 2 results blocks" in out
    assert doc.read_text() == drifted  # --check writes nothing
    assert main(["report", "--registry", str(registry), "--readme", str(doc)]) == 0
    assert doc.read_text() == good


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: text.replace('"mean": 0.', '"mean": 1.', 1), "'summary' does not match"),
        (lambda text: text.replace('"format": 1', '"format": 7'), "unknown registry format"),
    ],
)
def test_bad_entry_is_one_error_line(
    compared: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: object,
    message: str,
) -> None:
    _, registry = compared
    reg = tmp_path / "results"
    shutil.copytree(registry, reg)
    bad = reg / "synthetic" / "standard" / "mf.json"
    bad.write_text(edit(bad.read_text()))  # type: ignore[operator]
    doc = tmp_path / "page.md"
    doc.write_text("<!-- results dataset=synthetic protocol=standard -->\n<!-- /results -->\n")
    capsys.readouterr()
    assert main(["report", "--registry", str(reg), "--readme", str(doc), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: ") and message in err


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("<!-- results dataset=synthetic -->\n<!-- /results -->\n", "needs protocol="),
        ("<!-- results dataset=synthetic protocol=standard colour=red -->\n<!-- /results -->\n", "'colour'"),
        (
            "<!-- results dataset=synthetic protocol=standard models=sgl -->\n<!-- /results -->\n",
            "no registry entry for sgl",
        ),
        ("<!-- results dataset=synthetic protocol=standard -->\n", "is not closed"),
    ],
)
def test_bad_block_is_one_error_line(
    compared: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], block: str, message: str
) -> None:
    _, registry = compared
    doc = tmp_path / "page.md"
    doc.write_text("intro\n" + block)
    capsys.readouterr()
    assert main(["report", "--registry", str(registry), "--readme", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {doc}:2: ") and message in err
    assert doc.read_text() == "intro\n" + block


def test_missing_registry_folder_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --registry is named as such and leaves the Markdown file untouched."""
    doc = tmp_path / "page.md"
    doc.write_text("intro\n")
    capsys.readouterr()
    assert main(["report", "--registry", str(tmp_path / "reslts"), "--readme", str(doc)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'reslts'}: registry folder does not exist (create it with --add RUN_DIR ...)\n"
    )
    assert doc.read_text() == "intro\n"


def test_published_figures_belong_to_the_model_not_its_variants(
    compared: tuple[Path, Path], tmp_path: Path
) -> None:
    _, registry = compared
    reg = tmp_path / "results"
    shutil.copytree(registry, reg)
    folder = reg / "synthetic" / "standard"
    variant = json.loads((folder / "mf.json").read_text())
    variant["label"] = "mf w/o bias"  # an ablation variant of mf
    (folder / "mf-wo-bias.json").write_text(json.dumps(variant))
    fig = {"dataset": "synthetic", "protocol": "standard", "model": "mf", "source": "s", "recall@20": 0.25}
    (reg / "published.json").write_text(json.dumps({"sources": {"s": "Paper, Table 1"}, "figures": [fig]}))
    doc = tmp_path / "a.md"
    doc.write_text(
        "<!-- results dataset=synthetic protocol=standard models=mf,mf-wo-bias metrics=recall@20 -->\n"
        "<!-- /results -->\n"
    )
    assert main(["report", "--registry", str(reg), "--readme", str(doc)]) == 0
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| mf")]
    assert (
        rows[0].endswith("| 0.2500 |")
        and rows[1].startswith("| mf w/o bias | 2 |")
        and rows[1].endswith("| – |")
    )


def test_markers_in_fenced_code_are_examples(tmp_path: Path) -> None:
    block = "<!-- results dataset=x protocol=y -->\n<!-- /results -->\n"
    text = f"```markdown\n{block}```\n~~~\n{block}~~~\n{block}"
    blocks = parse_blocks(tmp_path / "a.md", text)
    assert [(b.line, b.attrs) for b in blocks] == [(9, {"dataset": "x", "protocol": "y"})]


def test_repository_tables_match_the_committed_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """README.md and docs/*.md show exactly what `results/` renders (`modalrec report --readme --check`)."""
    files = default_files(REPO)
    if not any(parse_blocks(f, f.read_text(encoding="utf-8")) for f in files):
        pytest.skip("no results blocks in README.md or docs/*.md yet")
    monkeypatch.chdir(REPO)
    assert main(["report", "--registry", "results", "--readme", "--check"]) == 0
