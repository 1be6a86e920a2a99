"""Property-based fuzzing of every dataset reader: bad input ends in a clean DataError or a correct load.

Each example writes a dataset folder (canonical CSV, MMSSL JSON, MMRec .inter TSV, with or without .npy
features), generated from well-formed rows plus adversarial mutations: bad headers, wrong delimiters,
non-numeric / negative / huge / empty ids, NaN and inf, wrong dtypes and shapes, object (pickle) arrays,
mismatched row counts, duplicates, empty files, truncated files, non-UTF-8 bytes, deep JSON nesting.

For every example:
  * ``load_dataset`` either returns a Dataset that matches the files (checked against an independent
    expectation for well-formed inputs, and against structural invariants always) or raises DataError whose
    message is one line and names the file (or folder) and, for row errors, the line;
  * ``modalrec data validate <folder>`` exits 0 or 2 accordingly, printing one ``error:`` line, no traceback.

Any other exception type fails the test. Examples are derandomized, so the run is deterministic; the number of
cases per reader is counted and printed (``pytest -s``) and written to $MODALREC_FUZZ_REPORT when set.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalrec.cli import main
from modalrec.data import Dataset, load_dataset
from modalrec.errors import DataError

N_EXAMPLES = int(os.environ.get("MODALREC_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=N_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    total = sum(v for k, v in COUNTS.items() if k.endswith(":cases"))
    lines = [f"{k} {v}" for k, v in sorted(COUNTS.items())] + [f"total:cases {total}"]
    print("\nfuzz cases run:\n  " + "\n  ".join(lines))
    report = os.environ.get("MODALREC_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({**COUNTS, "total": total}, indent=2))


# ---- the check every example goes through --------------------------------------------------------------------


class Poison:
    """Unpickling this runs code; a reader must never unpickle it."""

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, ("touch /tmp/modalrec_fuzz_pwned",))


def check_folder(reader: str, folder: Path, expect: Callable[[Dataset], None] | None = None) -> None:
    """Load ``folder`` through the library and the CLI; only a correct load or a clean DataError pass."""
    COUNTS[f"{reader}:cases"] += 1
    try:
        data = load_dataset(folder)
    except DataError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, f"multi-line error: {msg!r}"
        assert str(folder) in msg, f"error does not name the file or folder: {msg}"
        if exc.row is not None:
            assert exc.row >= 1 and f"line {exc.row}" in msg
        COUNTS[f"{reader}:data_error"] += 1
        outcome = 2
    else:
        check_invariants(data)
        if expect is not None:
            expect(data)
        COUNTS[f"{reader}:loaded"] += 1
        outcome = 0
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["-q", "data", "validate", str(folder)])
    assert code == outcome, err.getvalue()
    text = err.getvalue()
    assert "Traceback" not in text
    if outcome == 2:
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(folder) in errors[0], text
    assert not Path("/tmp/modalrec_fuzz_pwned").exists(), "a pickle payload was executed"


def check_invariants(data: Dataset) -> None:
    """What every loaded Dataset must satisfy, whatever the input looked like."""
    shape = (data.n_users, data.n_items)
    assert data.n_users >= 1 and data.n_items >= 1
    for mat in (data.train, data.val, data.test):
        assert mat.shape == shape and mat.dtype == np.float32
        assert (mat.data == 1.0).all()
    assert data.train.nnz > 0 and data.val.nnz > 0 and data.test.nnz > 0
    assert data.train.multiply(data.val).nnz == 0 and data.train.multiply(data.test).nnz == 0
    assert len(set(data.user_ids.tolist())) == data.n_users
    assert len(set(data.item_ids.tolist())) == data.n_items
    for feats in data.features.values():
        assert feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] == data.n_items
        assert feats.shape[1] >= 1 and np.isfinite(feats).all()


def pairs_of(data: Dataset, split: str) -> set[tuple[str, str]]:
    coo = getattr(data, split).tocoo()
    return {(str(data.user_ids[r]), str(data.item_ids[c])) for r, c in zip(coo.row, coo.col, strict=True)}


@contextlib.contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        yield Path(tmp) / "ds"


# ---- building blocks ------------------------------------------------------------------------------------------

GOOD_ID = st.integers(0, 30).map(str) | st.sampled_from(["u1", "u2", "item_7", "b00x", "ü3", "10", "007"])
BAD_ID = st.sampled_from(
    [
        "",
        " ",
        "-1",
        "-999",
        "9" * 40,
        "9" * 5000,
        "1e400",
        "nan",
        "inf",
        "NaN",
        "²",
        "٣",
        '"quoted"',
        '"unterminated',
        "a,b",
        "a\tb",
        "x" * 200_000,
        "\x00",
        "\u2028",
        "\ufeffu1",
    ]
)
ID = GOOD_ID | BAD_ID | st.text(max_size=6)

HEADERS = st.sampled_from(
    [
        ["user", "item"],
        ["user", "item", "timestamp"],
        ["item", "user"],
        ["\ufeffuser", "item"],
        ["User", "Item"],
        ["user"],
        ["usr", "item"],
        [],
        ["user", "item", "rating", "extra"],
    ]
)
DELIMS = st.sampled_from([",", ",", ",", ";", "\t", " ", "|"])
TIMESTAMPS = st.sampled_from(["1", "2.5", "nan", "inf", "-inf", "1e400", "x", "", " 3 ", "1_000", "-5"])


@st.composite
def csv_bytes(draw: st.DrawFn, width_hint: int = 2) -> bytes:
    """A CSV-ish file: a header, rows of ids, then byte-level mutations."""
    header = draw(HEADERS)
    delim = draw(DELIMS)
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        n = (
            draw(st.integers(max(0, len(header) - 1), len(header) + 1))
            if draw(st.booleans())
            else len(header)
        )
        fields = [draw(TIMESTAMPS) if h == "timestamp" else draw(ID) for h in header[:n]]
        fields += [draw(ID) for _ in range(n - len(fields))]
        rows.append(delim.join(fields))
    text = delim.join(header) + "\n" + "\n".join(rows) + ("\n" if draw(st.booleans()) else "")
    data = text.encode("utf-8", errors="surrogatepass")
    return draw(mutate(data))


@st.composite
def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """Leave bytes alone, or truncate, splice in invalid UTF-8 / NULs / CRs, empty or replace them."""
    kind = draw(st.sampled_from(["none", "none", "none", "truncate", "splice", "empty", "random", "latin1"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "splice":
        pos = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff\xfe", b"\x80", b"\x00", b"\r", b"\r\n\r\n", b'"', b"\xc3"]))
        return data[:pos] + junk + data[pos:]
    if kind == "empty":
        return b""
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "latin1":
        return data + "café,naïve\n".encode("latin-1")
    return data


@st.composite
def npy_bytes(draw: st.DrawFn, n_rows: int) -> bytes:
    """A .npy file: good [n, d] floats, or wrong dtype/shape/rows, NaN/inf, object arrays, junk bytes."""
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "rows",
                "nan",
                "inf",
                "overflow",
                "int",
                "bool",
                "complex",
                "str",
                "datetime",
                "structured",
                "object",
                "pickle",
                "scalar",
                "1d",
                "3d",
                "zero_dim",
                "junk",
                "truncated",
                "float16",
                "fortran",
            ]
        )
    )
    d = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arr: Any = rng.normal(size=(n_rows, d)).astype(np.float32)
    if kind == "rows":
        arr = rng.normal(size=(max(0, n_rows + draw(st.sampled_from([-1, 1, 5, -n_rows]))), d))
    elif kind in ("nan", "inf", "overflow"):
        arr = arr.astype(np.float64)
        if n_rows:
            value = {"nan": np.nan, "inf": -np.inf, "overflow": 1e300}[kind]
            arr[draw(st.integers(0, n_rows - 1)), draw(st.integers(0, d - 1))] = value
    elif kind == "int":
        arr = rng.integers(-(2**62), 2**62, size=(n_rows, d))
    elif kind == "bool":
        arr = arr > 0
    elif kind == "complex":
        arr = arr.astype(np.complex64)
    elif kind == "str":
        arr = arr.astype(str)
    elif kind == "datetime":
        arr = np.zeros((n_rows, d), dtype="datetime64[s]")
    elif kind == "structured":
        arr = np.zeros(n_rows, dtype=[("a", "f4"), ("b", "i4")])
    elif kind == "object":
        arr = arr.astype(object)
    elif kind == "pickle":
        arr = np.array([Poison()] * max(1, n_rows), dtype=object)
    elif kind == "scalar":
        arr = np.float32(1.0)
    elif kind == "1d":
        arr = arr[:, 0]
    elif kind == "3d":
        arr = arr.reshape(n_rows, d, 1)
    elif kind == "zero_dim":
        arr = np.zeros((n_rows, 0), dtype=np.float32)
    elif kind == "float16":
        arr = arr.astype(np.float16)
    elif kind == "fortran":
        arr = np.asfortranarray(arr.astype(np.float64))
    if kind == "junk":
        return draw(st.binary(max_size=80))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    raw = buf.getvalue()
    if kind == "truncated":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


# ---- canonical CSV folder -------------------------------------------------------------------------------------


@st.composite
def clean_pairs(draw: st.DrawFn, lo: int, hi: int) -> list[tuple[str, str]]:
    """Pairs over users u0..u5 and items lo..hi (disjoint item ranges keep splits from overlapping)."""
    users = [f"u{k}" for k in range(6)]
    items = [str(k) for k in range(lo, hi + 1)]
    return draw(st.lists(st.tuples(st.sampled_from(users), st.sampled_from(items)), min_size=1, max_size=30))


def write_csv(path: Path, header: list[str], rows: Sequence[tuple[str, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")


@FUZZ
@given(
    train=clean_pairs(0, 4),
    val=clean_pairs(5, 6),
    test=clean_pairs(7, 7),
    with_items=st.booleans(),
    corrupt=st.sampled_from(["none", "none", "none", "train", "val", "test", "items"]),
    bad=csv_bytes(),
    feature=st.none() | npy_bytes(8),
)
def test_canonical_split_folder(
    train: list[tuple[str, str]],
    val: list[tuple[str, str]],
    test: list[tuple[str, str]],
    with_items: bool,
    corrupt: str,
    bad: bytes,
    feature: bytes | None,
) -> None:
    """split/{train,val,test}.csv + items.csv + <modality>.npy, one file possibly replaced by adversarial bytes."""
    with folder() as root:
        for name, pairs in (("train", train), ("val", val), ("test", test)):
            write_csv(root / "split" / f"{name}.csv", ["user", "item"], pairs)
        if with_items or feature is not None:
            write_csv(root / "items.csv", ["item"], [(str(k),) for k in range(8)])
        if feature is not None:
            (root / "image.npy").write_bytes(feature)
        if corrupt == "items":
            (root / "items.csv").write_bytes(bad)
        elif corrupt != "none":
            (root / "split" / f"{corrupt}.csv").write_bytes(bad)

        def expect(data: Dataset) -> None:
            if corrupt != "none":
                return
            for name, pairs in (("train", train), ("val", val), ("test", test)):
                assert pairs_of(data, name) == set(pairs)
            if feature is not None:
                assert np.allclose(data.features["image"], stored_rows(feature, data, "image"))

        check_folder("canonical", root, expect)


@FUZZ
@given(content=csv_bytes(), items=st.none() | csv_bytes(), seed=st.integers(0, 3))
def test_canonical_interactions_file(content: bytes, items: bytes | None, seed: int) -> None:
    """interactions.csv (split by the loader) fully generated, with an optional adversarial items.csv."""
    with folder() as root:
        root.mkdir()
        (root / "interactions.csv").write_bytes(content)
        if items is not None:
            (root / "items.csv").write_bytes(items)
        check_folder("canonical_interactions", root)


@FUZZ
@given(
    pairs=st.lists(st.tuples(ID, ID), min_size=1, max_size=60),
    dup=st.integers(0, 5),
)
def test_canonical_well_formed_any_ids(pairs: list[tuple[str, str]], dup: int) -> None:
    """Properly quoted CSV with arbitrary id strings: loads exactly those (stripped) pairs, or a clean error."""
    import csv

    with folder() as root:
        root.mkdir()
        base = [(f"base{u}", f"b{i}") for u in range(3) for i in range(12)]  # guarantees val/test users
        with (root / "interactions.csv").open(
            "w", newline="", encoding="utf-8", errors="surrogatepass"
        ) as fh:
            writer = csv.writer(fh)
            writer.writerow(["user", "item"])
            writer.writerows(base + pairs + pairs[:dup])

        def expect(data: Dataset) -> None:
            loaded = set().union(*(pairs_of(data, s) for s in ("train", "val", "test")))
            assert loaded == {(u.strip(), i.strip()) for u, i in base + pairs}

        check_folder("canonical_any_ids", root, expect)


# ---- MMSSL json ----------------------------------------------------------------------------------------------

JSON_LEAF = (
    st.integers(-5, 12)
    | st.sampled_from([10**20, 2**63, 2**40, -(2**63) - 1, True, None, 1.0, 1.5, "3", "x"])
    | st.floats(allow_nan=True, allow_infinity=True)
)
JSON_ANY = st.recursive(
    JSON_LEAF | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def mmssl_split(draw: st.DrawFn, lo: int, hi: int) -> bytes:
    """One split file: user -> item indices in [lo, hi] when good, else adversarial JSON."""
    kind = draw(
        st.sampled_from(["good"] * 10 + ["values", "values", "any", "raw", "deep", "bigint", "dupkey"])
    )
    if kind == "deep":
        depth = draw(st.sampled_from([50, 5000, 200_000]))
        return ("[" * depth + "]" * depth).encode()
    if kind == "bigint":
        return b'{"0": [' + b"7" * 6000 + b"]}"
    if kind == "dupkey":
        return b'{"0": [1, 2], "0": [3]}'
    if kind == "raw":
        return draw(mutate(draw(st.text(max_size=30)).encode("utf-8", errors="surrogatepass")))
    if kind == "any":
        obj: Any = draw(JSON_ANY)
    else:
        if kind == "good":
            users = st.sampled_from(["0", "1", "2", "3", "10", "u", "ü"])
            obj = draw(
                st.dictionaries(users, st.lists(st.integers(lo, hi), max_size=4), min_size=1, max_size=5)
            )
        else:
            users = st.sampled_from(["0", "1", "2", "3", "10", "", " ", "-1", "u"])
            obj = draw(st.dictionaries(users, st.lists(JSON_LEAF, max_size=6), max_size=5))
    return json.dumps(obj, allow_nan=True).encode()


@FUZZ
@given(
    train=mmssl_split(0, 7),
    val=mmssl_split(8, 9),
    test=mmssl_split(10, 11),
    feats=st.lists(npy_bytes(12), max_size=2),
)
def test_mmssl_folder(train: bytes, val: bytes, test: bytes, feats: list[bytes]) -> None:
    """train/val/test.json (user -> item indices) + *_feat.npy aligned to item indices."""
    with folder() as root:
        root.mkdir()
        for name, raw in (("train", train), ("val", val), ("test", test)):
            (root / f"{name}.json").write_bytes(raw)
        for name, raw in zip(("image", "text"), feats, strict=False):
            (root / f"{name}_feat.npy").write_bytes(raw)

        def expect(data: Dataset) -> None:
            for name, raw in (("train", train), ("val", val), ("test", test)):
                obj = json.loads(raw)
                want = {(u, str(i)) for u, items in obj.items() for i in items}
                assert pairs_of(data, name) == want
            assert sorted(data.features) == sorted(["image", "text"][: len(feats)])

        check_folder("mmssl", root, expect)


# ---- MMRec .inter TSV ----------------------------------------------------------------------------------------

INTER_HEADERS = st.sampled_from(
    [
        ["userID", "itemID", "x_label"],
        ["userID:token", "itemID:token", "x_label:float"],
        ["userID", "itemID", "rating", "timestamp", "x_label"],
        ["itemID", "userID", "x_label"],
        ["userID", "itemID"],
        ["user", "item", "label"],
    ]
)
INTER_VALUE = st.integers(0, 9).map(str) | st.sampled_from(
    ["0", "1", "2", "3", "-1", "1.0", "x", "", " 2", "9" * 30, "9" * 5000, "٣", "²", "1e3", "nan"]
)


@st.composite
def inter_bytes(draw: st.DrawFn) -> bytes:
    header = draw(INTER_HEADERS)
    delim = draw(st.sampled_from(["\t", "\t", "\t", ",", " "]))
    lines = [delim.join(header)]
    for _ in range(draw(st.integers(0, 25))):
        fields = []
        for h in header:
            if h.startswith("x_label"):
                fields.append(draw(st.sampled_from(["0", "0", "0", "1", "2"]) | INTER_VALUE))
            elif h.startswith("userID"):
                fields.append(draw(st.sampled_from(["a", "b", "c", "7"]) | ID))
            else:
                fields.append(draw(st.integers(0, 9).map(str) | INTER_VALUE))
        if draw(st.integers(0, 9)) == 0:
            fields = fields[:-1]
        lines.append(delim.join(fields))
    return draw(mutate(("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")))


@FUZZ
@given(
    inter=inter_bytes(),
    feats=st.lists(npy_bytes(10), max_size=2),
    extra_inter=st.integers(0, 8).map(lambda v: v == 0),
)
def test_mmrec_folder(inter: bytes, feats: list[bytes], extra_inter: bool) -> None:
    """<name>.inter (userID, itemID, x_label) + *_feat.npy; sometimes two .inter files."""
    with folder() as root:
        root.mkdir()
        (root / "ds.inter").write_bytes(inter)
        if extra_inter:
            (root / "other.inter").write_bytes(inter)
        for name, raw in zip(("v", "t"), feats, strict=False):
            (root / f"{name}_feat.npy").write_bytes(raw)
        check_folder("mmrec", root)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(0, 9), st.sampled_from([0, 0, 1, 2])),
        max_size=60,
        unique_by=lambda p: (p[0], p[1]),
    )
)
def test_mmrec_well_formed(pairs: list[tuple[str, int, int]]) -> None:
    """Well-formed .inter files load exactly the listed pairs per x_label (or a clean empty-split error)."""
    with folder() as root:
        root.mkdir()
        rows = ["userID\titemID\tx_label", *(f"{u}\t{i}\t{lab}" for u, i, lab in pairs)]
        (root / "ds.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")

        def expect(data: Dataset) -> None:
            for lab, name in enumerate(("train", "val", "test")):
                assert pairs_of(data, name) == {(u, str(i)) for u, i, la in pairs if la == lab}

        check_folder("mmrec_well_formed", root, expect)


# ---- .npy features alone -------------------------------------------------------------------------------------


@FUZZ
@given(feature=npy_bytes(8), name=st.sampled_from(["image", "text", "a b", "ü"]))
def test_feature_files(feature: bytes, name: str) -> None:
    """A valid canonical folder with one adversarial <modality>.npy."""
    with folder() as root:
        write_csv(root / "split" / "train.csv", ["user", "item"], [("a", "0"), ("a", "1"), ("b", "2")])
        write_csv(root / "split" / "val.csv", ["user", "item"], [("a", "3")])
        write_csv(root / "split" / "test.csv", ["user", "item"], [("b", "4")])
        write_csv(root / "items.csv", ["item"], [(str(k),) for k in range(8)])
        (root / f"{name}.npy").write_bytes(feature)

        def expect(data: Dataset) -> None:
            assert np.array_equal(data.features[name], stored_rows(feature, data, name))

        check_folder("npy", root, expect)


def stored_rows(raw: bytes, data: Dataset, name: str) -> np.ndarray:
    """The rows a loaded dataset must hold for the .npy bytes ``raw``: the file's rows as float32, a row of NaN
    (an item without this content) masked off and stored as zeros."""
    want = np.load(io.BytesIO(raw), allow_pickle=False).reshape(data.n_items, -1).astype(np.float32)
    missing = np.isnan(want).all(axis=1)
    assert np.array_equal(data.present(name), ~missing)
    want[missing] = 0.0
    return want


@st.composite
def mask_bytes(draw: st.DrawFn, n_rows: int) -> bytes:
    """A <modality>.mask.npy: good booleans, or all False, wrong shape/dtype, a pickle, junk or truncated bytes."""
    kind = draw(
        st.sampled_from(["good", "good", "all_false", "rows", "2d", "int", "float", "object", "junk", "cut"])
    )
    if kind == "junk":
        return draw(st.binary(max_size=80))
    arr: Any = np.array(draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows)), dtype=bool)
    if kind == "all_false":
        arr[:] = False
    elif kind == "rows":
        arr = np.ones(n_rows + draw(st.sampled_from([-1, 1])), dtype=bool)
    elif kind == "2d":
        arr = arr.reshape(n_rows, 1)
    elif kind in ("int", "float", "object"):
        arr = arr.astype({"int": np.int8, "float": np.float32, "object": object}[kind])
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    raw = buf.getvalue()
    return raw[: draw(st.integers(0, len(raw) - 1))] if kind == "cut" else raw


@st.composite
def rows_with_missing(draw: st.DrawFn, n_rows: int) -> bytes:
    """Good float rows [n_rows, 3] of which some are NaN in full (items without the content)."""
    arr = np.arange(n_rows * 3, dtype=np.float32).reshape(n_rows, 3)
    arr[draw(st.lists(st.integers(0, n_rows - 1), max_size=n_rows))] = np.nan
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@FUZZ
@given(feature=rows_with_missing(8) | npy_bytes(8), mask=mask_bytes(8))
def test_mask_files(feature: bytes, mask: bytes) -> None:
    """A canonical folder with an adversarial image.npy and an adversarial image.mask.npy beside it."""
    with folder() as root:
        write_csv(root / "split" / "train.csv", ["user", "item"], [("a", "0"), ("a", "1"), ("b", "2")])
        write_csv(root / "split" / "val.csv", ["user", "item"], [("a", "3")])
        write_csv(root / "split" / "test.csv", ["user", "item"], [("b", "4")])
        write_csv(root / "items.csv", ["item"], [(str(k),) for k in range(8)])
        (root / "image.npy").write_bytes(feature)
        (root / "image.mask.npy").write_bytes(mask)

        def expect(data: Dataset) -> None:
            given = np.load(io.BytesIO(mask), allow_pickle=False)
            rows = np.load(io.BytesIO(feature), allow_pickle=False).reshape(8, -1).astype(np.float32)
            present = given & ~np.isnan(rows).all(axis=1)
            assert np.array_equal(data.present("image"), present)
            rows[~present] = 0.0
            assert np.array_equal(data.features["image"], rows)

        check_folder("mask", root, expect)


def test_pickle_payload_in_npy_is_refused() -> None:
    """An object array with a malicious __reduce__ is refused without unpickling it (every reader)."""
    payload = io.BytesIO()
    np.save(payload, np.array([Poison()] * 3, dtype=object), allow_pickle=True)
    assert b"system" in payload.getvalue()
    with folder() as root:
        root.mkdir()
        for part, obj in (("train", {"0": [0, 1]}), ("val", {"0": [2]}), ("test", {"1": [0]})):
            (root / f"{part}.json").write_text(json.dumps(obj))
        (root / "image_feat.npy").write_bytes(payload.getvalue())
        with pytest.raises(DataError, match=r"image_feat\.npy"):
            load_dataset(root)
    assert not Path("/tmp/modalrec_fuzz_pwned").exists()
