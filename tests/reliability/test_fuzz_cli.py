"""Property-based fuzzing of the whole command line, run in-process through ``modalrec.cli.main(argv)``.

Hypothesis builds argument lists for every command (``train``, ``evaluate``, ``recommend``, ``export``, ``data
stats|validate|convert|split|synth``, ``models``), ``--set`` overrides with hostile values (negative, huge, NaN,
inf, wrong types, nested lists, unknown keys) and config files (random bytes, random text, YAML of random
sections, deep nesting). For every case it asserts:

* the exit code is 0 or 2, and no traceback is printed;
* exit 2 prints exactly one ``error:`` line;
* nothing is partially written: no temporary file is left, every ``metrics.json`` is strict JSON and every
  ``config.yaml`` is YAML;
* a pre-existing finished run folder is byte-for-byte unchanged (its ``log.txt`` may only grow) unless
  ``--overwrite`` was given.

Profiles: ``MODALREC_FUZZ_CLI_EXAMPLES`` examples per test (default 25: the fast profile of the normal test run);
the long profile recorded in docs/reliability.md used 1,300 per test (4 tests, 5,200 cases). Case counts by
command and exit code are printed (``pytest -s``) and written to ``$MODALREC_FUZZ_REPORT`` when set. Examples
are derandomized, so every run is the same.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalrec.cli import main
from modalrec.data import SyntheticConfig, make_synthetic, save_dataset

N_EXAMPLES = int(os.environ.get("MODALREC_FUZZ_CLI_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=N_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
COUNTS: Counter[str] = Counter()
SAFE = ["--set", "train.max_batches=2", "--set", "train.threads=1", "--set", "train.progress=false"]


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    total = sum(v for k, v in COUNTS.items() if k.startswith("cases:"))
    print(f"\nCLI fuzz: {total} cases; " + ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items())))
    report = os.environ.get("MODALREC_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({**COUNTS, "total": total}, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny dataset folder and a finished run on it (both read-only references for the cases)."""
    root = tmp_path_factory.mktemp("fuzzcli")
    cfg = SyntheticConfig(n_users=40, n_items=30, n_interactions=400, latent_dim=4, n_clusters=3,
                          modality_dims={"visual": 4})  # fmt: skip
    data = save_dataset(make_synthetic(cfg, name="fz"), root / "data")
    run = root / "finished"
    argv = ["-q", "train", "--model", "vbpr", "--data", str(data), "--out", str(run), "--set", "train.epochs=1",
            "--set", "eval.ks=[5,10]", "--set", "eval.metric=recall@10", *SAFE]  # fmt: skip
    assert main(argv) == 0
    (root / "afile").write_text("not a folder")
    return {"root": root, "data": data, "run": run, "file": root / "afile"}


# ---- strategies ------------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, -1, 3, 10, 2**31, 2**32, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [".nan", ".inf", "-.inf", "1e400", "nan", "abc", "", "null", "true", "[1, -2]", "{a: 1}"]
    ),
    st.text(max_size=12),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)
)
KEYS = st.sampled_from(
    [
        "train.epochs", "train.lr", "train.batch_size", "train.patience", "train.weight_decay", "train.grad_clip",
        "train.lr_schedule", "train.lr_step", "train.lr_gamma", "train.ema", "train.eval_every", "train.sampler",
        "train.optimizer", "eval.ks", "eval.metric", "eval.chunk_size", "eval.group_bins", "eval.protocol",
        "eval.ndcg", "eval.mask_val_at_test", "data.split", "data.ratios", "data.modalities", "data.format",
        "model.embed_dim", "model.n_layers", "model.reg_weight", "model.feature_bias", "model.nope", "seed",
        "device", "train", "eval", "model", "data.synthetic.n_users", "train.epochz", "a.b.c", "",
    ]
)  # fmt: skip
MODELS = st.sampled_from(["mf", "lightgcn", "vbpr", "itemknn", "pop", "nope", ""])


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    out: list[str] = []
    for key, value in draw(st.lists(st.tuples(KEYS, VALUES), max_size=3)):
        if key == "train.epochs" and isinstance(value, int) and not isinstance(value, bool) and value > 2:
            value = 2  # keep valid runs short; bad epochs values stay as drawn
        if key == "data.synthetic.n_users" and isinstance(value, int) and value > 50:
            value = 50
        if key in ("model.embed_dim", "eval.chunk_size") and isinstance(value, int) and value > 4096:
            value = 4096
        out += ["--set", f"{key}={_yaml_value(value)}"]
    if draw(st.booleans()):
        out += ["--set", draw(st.sampled_from(["noequals", "=1", "train.=1", ".x=1", "train..lr=1"]))]
    return out


PLAUSIBLE = {
    "train.lr": [0.01, 0.001, 1e-5],
    "train.batch_size": [16, 64, 1000],
    "train.patience": [1, 3],
    "train.weight_decay": [0, 1e-4],
    "train.grad_clip": [0, 1.0],
    "train.lr_schedule": ["none", "step", "cosine"],
    "train.ema": [0, 0.9],
    "train.sampler": ["interactions", "users"],
    "train.eval_every": [1, 2],
    "eval.group_bins": ["[0, 2, 4]", "[0]", "[1, 100]"],
    "eval.protocol": ["standard", "paper"],
    "eval.chunk_size": [0, 7],
    "model.embed_dim": [4, 8],
    "seed": [0, 7, 2**32 - 1],
}


@st.composite
def plausible_overrides(draw: st.DrawFn) -> list[str]:
    """Valid settings (so that many cases train to the end), with at most one hostile override."""
    out: list[str] = []
    for key in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=4, unique=True)):
        out += ["--set", f"{key}={_yaml_value(draw(st.sampled_from(PLAUSIBLE[key])))}"]
    if draw(st.integers(0, 2)) == 0:
        key, value = draw(KEYS), draw(VALUES)
        out += ["--set", f"{key}={_yaml_value(value)}"]
    return out


@st.composite
def config_text(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["yaml", "yaml", "text", "bytes", "deep", "scalar"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        depth = draw(st.integers(50, 5000))
        return ("a: " + "[" * depth + "]" * depth + "\n").encode()
    if kind == "scalar":
        return draw(st.sampled_from([b"5\n", b"[1, 2]\n", b"null\n", b"'text'\n", b"data:\n", b"eval: 5\n"]))
    sections = st.sampled_from(["model", "data", "train", "eval", "seed", "device", "extra"])
    body = draw(st.dictionaries(sections, st.one_of(VALUES, st.dictionaries(st.sampled_from(
        ["name", "epochs", "lr", "ks", "metric", "path", "embed_dim", "split", "x"]), VALUES, max_size=3)),
        max_size=4))  # fmt: skip
    try:
        return yaml.safe_dump(body).encode()
    except (yaml.YAMLError, UnicodeEncodeError):
        return b"{}"


def _path(draw: st.DrawFn, w: dict[str, Path], tmp: Path) -> str:
    return str(
        draw(
            st.sampled_from(
                [
                    w["data"],
                    w["file"],
                    w["file"] / "under",
                    tmp / "missing",
                    tmp,
                    w["run"],
                    Path("/proc/self/mem"),
                ]
            )
        )
    )


@st.composite
def train_case(draw: st.DrawFn, w: dict[str, Path], tmp: Path) -> tuple[list[str], bool]:
    """(argv, targets the finished run) for ``modalrec train``: half plausible runs, half hostile ones."""
    tail = ["--set", "train.epochs=1", "--set", "eval.ks=[5,10]", "--set", "eval.metric=recall@10"]
    if draw(st.booleans()):
        model = draw(st.sampled_from(["mf", "lightgcn", "vbpr", "itemknn", "pop"]))
        target_run = draw(st.integers(0, 3)) == 0
        out = tmp / "finished" if target_run else tmp / "out"
        flags = draw(st.sampled_from([[], [], ["--resume"], ["--overwrite"]])) if target_run else []
        argv = ["-q", "train", "--model", model, "--data", str(w["data"]), "--out", str(out), *flags]
        return [*argv, *tail, *draw(plausible_overrides()), *SAFE], target_run
    argv = ["-q", "train"]
    if draw(st.booleans()):
        argv += ["--model", draw(MODELS)]
    if draw(st.integers(0, 3)) == 0:
        cfg = tmp / "cfg.yaml"
        cfg.write_bytes(draw(config_text()))
        argv += ["--config", str(cfg)]
    data = draw(st.sampled_from([w["data"], w["data"], "synthetic", w["file"], tmp / "missing"]))
    argv += ["--data", str(data)]
    if data == "synthetic":
        argv += ["--set", "data.synthetic={n_users: 40, n_items: 30, n_interactions: 300}"]
    if draw(st.booleans()):
        argv += ["--seed", draw(st.sampled_from(["0", "1", "-1", str(2**32), "x", "1.5"]))]
    if draw(st.integers(0, 4)) == 0:
        argv += [draw(st.sampled_from(["--ddp=-1", "--ddp=x", "--split=loo", "--split=bad", "--protocol=paper",
                                       "--device=cpu", "--device=tpu"]))]  # fmt: skip
    target_run = draw(st.integers(0, 2)) == 0
    out = tmp / "finished" if target_run else draw(st.sampled_from([tmp / "out", w["file"], w["file"] / "x"]))
    argv += ["--out", str(out)]
    argv += draw(st.sampled_from([[], [], ["--resume"], ["--overwrite"], ["--resume", "--overwrite"]]))
    return [*argv, *tail, *draw(overrides()), *SAFE], target_run


# ---- the check every case goes through -----------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_case(name: str, argv: list[str], tmp: Path) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # pragma: no cover - main returns argparse's exit codes itself
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    COUNTS[f"cases:{name}"] += 1
    COUNTS[f"exit{code}:{name}"] += 1
    assert code in (0, 2), (argv, code, text[-2000:])
    assert "Traceback" not in text, (argv, text[-3000:])
    if code == 2:
        lines = [ln for ln in text.splitlines() if ln.startswith("error:") or ": error:" in ln]
        assert len(lines) == 1, (argv, text[-2000:])
    for path in tmp.rglob("*"):
        assert not (path.name.startswith(".") and path.name != ".npy"), (argv, f"temporary file left: {path}")
        if path.name == "metrics.json":
            json.loads(path.read_text(), parse_constant=_refuse_constant)
        if path.name == "config.yaml" and path.parent.name != "cfg.yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), (argv, path)
    return int(code)


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"bare {name} in a metrics.json")


@contextlib.contextmanager
def case_dir(w: dict[str, Path]) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(dir=w["root"], prefix="case"))
    try:
        shutil.copytree(w["run"], tmp / "finished")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the tests -------------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_train(world: dict[str, Path], data: st.DataObject) -> None:
    with case_dir(world) as tmp:
        before = _snapshot(tmp / "finished")
        argv, target_run = data.draw(train_case(world, tmp))
        run_case("train", argv, tmp)
        if (target_run and "--overwrite" not in argv) or not target_run:
            after = _snapshot(tmp / "finished")
            log_after, log_before = after.pop("log.txt", b""), before.pop("log.txt", b"")
            assert after == before and log_after.startswith(log_before), argv


@FUZZ
@given(data=st.data())
def test_fuzz_run_commands(world: dict[str, Path], data: st.DataObject) -> None:
    """evaluate / recommend / export on the finished run or on bad paths; the run stays unchanged."""
    with case_dir(world) as tmp:
        run = tmp / "finished"
        before = _snapshot(run)
        command = data.draw(st.sampled_from(["evaluate", "recommend", "export"]))
        target = data.draw(
            st.sampled_from([str(run), str(run), str(world["file"]), str(tmp / "missing"), str(tmp)])
        )
        argv = [command, "--run", target]
        if command == "evaluate":
            argv += data.draw(
                st.sampled_from([[], ["--split", "val"], ["--split", "x"], ["--protocol", "paper"]])
            )
        if command == "recommend":
            ids = st.sampled_from(["u0", "u1", "u39", "0", "u", "", "../x", "٣", "1_0", "x" * 300])
            users = data.draw(st.lists(ids, min_size=1, max_size=3))
            for u in users:
                argv += ["--user", u]
            argv += [
                "--k",
                data.draw(st.sampled_from(["1", "5", "0", "-3", "1000000", "x", "2.5", str(2**70)])),
            ]
            argv += data.draw(st.sampled_from([[], ["--json"], ["--include-seen"]]))
        if command == "export":
            argv += data.draw(st.sampled_from([[], ["--format", "parquet"], ["--format", "csv"]]))
            outs = [tmp / "e.npz", world["file"], world["file"] / "x", tmp / "e", run / "checkpoint.pt"]
            argv += ["--out", str(data.draw(st.sampled_from(outs)))]
        if data.draw(st.integers(0, 3)) == 0:
            argv += ["--data", _path(data.draw, world, tmp)]
        run_case(command, argv, tmp)
        after = _snapshot(run)
        if str(run / "checkpoint.pt") not in argv:  # exporting onto the run's own file replaces it on purpose
            assert after == before, argv


@FUZZ
@given(data=st.data())
def test_fuzz_data_commands(world: dict[str, Path], data: st.DataObject) -> None:
    with case_dir(world) as tmp:
        action = data.draw(st.sampled_from(["stats", "validate", "convert", "split", "synth"]))
        argv = ["data", action]
        if data.draw(st.booleans()):  # a plausible case, which must succeed or fail cleanly on its own merits
            argv += [] if action == "synth" else [str(world["data"])]
            argv += [] if action in ("stats", "validate") else ["--out", str(tmp / "o")]
            argv += (
                ["--ratios", data.draw(st.sampled_from(["0.8,0.1,0.1", "0.6,0.2,0.2"]))]
                if action == "split"
                else []
            )
            argv += (
                ["--method", data.draw(st.sampled_from(["ratio", "loo", "temporal"]))]
                if action == "split"
                else []
            )
            argv += ["--users", "30", "--items", "20", "--interactions", "200"] if action == "synth" else []
            argv += (
                ["--seed", str(data.draw(st.integers(0, 2**32 - 1)))] if action in ("split", "synth") else []
            )
            run_case(f"data-{action}", argv, tmp)
            return
        if action != "synth":
            argv.append(_path(data.draw, world, tmp))
            argv += data.draw(
                st.sampled_from([[], ["--format", "mmssl"], ["--format", "canonical"], ["--format", "x"]])
            )
        if action in ("convert", "split", "synth"):
            argv += ["--out", data.draw(st.sampled_from([str(tmp / "o"), str(world["file"]), str(world["file"] / "o"),
                                                         str(tmp / "finished")]))]  # fmt: skip
            argv += data.draw(st.sampled_from([[], ["--overwrite"]]))
        ints = st.sampled_from(["0", "1", "2", "5", "10", "40", "-5", str(2**32), "x", "1e3", ""])
        if action == "split":
            ratios = data.draw(st.sampled_from(["0.8,0.1,0.1", "foo,0.1,0.1", "0.5,0.5", "1,0,0", "-1,1,1",
                                                "nan,0.1,0.1", "0.6,0.2,0.2", "", "inf,0,0"]))  # fmt: skip
            argv += [
                "--ratios",
                ratios,
                "--method",
                data.draw(st.sampled_from(["ratio", "loo", "temporal", "x"])),
            ]
            argv += ["--seed", data.draw(ints)]
        if action == "synth":
            for flag in ("--users", "--items", "--interactions", "--seed"):
                if data.draw(st.booleans()):
                    argv += [flag, data.draw(ints)]
            for flag, small in (("--users", "30"), ("--items", "20"), ("--interactions", "200")):
                if flag not in argv:
                    argv += [flag, small]  # keep valid cases small
        if data.draw(st.booleans()):
            argv.append("--json")
        before = _snapshot(tmp / "finished")
        run_case(f"data-{action}", argv, tmp)
        if "--overwrite" not in argv:
            assert _snapshot(tmp / "finished") == before, argv


@FUZZ
@given(data=st.data())
def test_fuzz_raw_argv(world: dict[str, Path], data: st.DataObject) -> None:
    """Arbitrary token lists built from the CLI's own words, flags and hostile values."""
    words = st.sampled_from(
        ["train", "evaluate", "recommend", "export", "serve", "models", "data", "stats", "synth", "compare",
         "--model", "mf", "--set", "--out", "--run", "--data", "--k", "--seed", "--port", "-q", "--help", "--ddp=2",
         "--jobs", "-3", "0", "99999", "x", "--", "=", "train.lr=-1", str(2**64), "\x00"]
    )  # fmt: skip
    with case_dir(world) as tmp:
        argv = data.draw(st.lists(words, max_size=6))
        if "--ddp=2" in argv or "serve" in argv or "compare" in argv or "tune" in argv:
            argv = [
                a for a in argv if a not in ("--ddp=2", "serve", "compare", "tune")
            ]  # no processes/servers
        if argv[:1] == ["train"] or "train" in argv:
            argv = [*argv, "--out", str(tmp / "o"), "--set", "train.epochs=1", *SAFE]
        with contextlib.chdir(tmp):
            run_case("argv", argv, tmp)
