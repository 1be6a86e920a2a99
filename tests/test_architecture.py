"""The package's structure, checked from its source with ``ast``: imports point down the layers of
``modalrec.layers`` and form no cycle, and no module assigns attributes of another module or of a model. Also: the
worked example of docs/architecture.md runs as written."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.layers import LAYERS, layer_of
from modalrec.models import MODELS
from modalrec.train import train

SRC = Path(__file__).resolve().parents[1] / "src" / "modalrec"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(name: str, tree: ast.AST) -> set[str]:
    """modalrec modules that ``name`` imports anywhere (top level, in functions, under TYPE_CHECKING, or by
    ``importlib.import_module`` with a literal name)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "modalrec"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).rstrip(".")
            if base.split(".")[0] != "modalrec":
                continue
            for alias in node.names:  # "from modalrec.graph import propagation" imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
            arg = node.args[0]  # importlib.import_module("modalrec.train") is an import too
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return {m for m in found if m in MODULES and m != name}


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, ast.parse(path.read_text())) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)  # KeyError names the module


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
        for src, targets in import_graph().items()
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_on_hand_made_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# ---- no run-time patching ---------------------------------------------------------------------------------------

# Methods of the model contract (models/base.py) and nn.Module that nobody may replace on an instance.
MODEL_METHODS = {
    "forward", "loss", "score", "batch_loss", "train_step", "on_epoch_start", "configure_optimizers",
    "item_embeddings_from_features", "state_dict", "load_state_dict", "to", "train", "eval",
}  # fmt: skip


def patching_assignments(tree: ast.AST) -> list[str]:
    """Assignments (``=``, ``setattr``) to attributes of imported modules or to a model's methods."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            # "from modalrec.graph import propagation", "from torch import distributed as dist": modules too
            # (any lower-case name imported from outside the package counts; a false alarm names its line)
            base = node.module or ""
            for alias in node.names:
                outside = base.split(".")[0] != "modalrec" and alias.name.islower()
                if outside or f"{base}.{alias.name}" in MODULES:
                    modules.add(alias.asname or alias.name)
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            obj = node.args[0] if node.args else None
            if isinstance(obj, ast.Name) and obj.id in modules:
                found.append(f"line {node.lineno}: setattr({obj.id}, ...)")
            continue
        for target in targets:
            if not isinstance(target, ast.Attribute):
                continue
            base = target.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"line {node.lineno}: {ast.unparse(target)} = ...")
            elif not (isinstance(target.value, ast.Name) and target.value.id == "self") and (
                target.attr in MODEL_METHODS or is_model(target.value)
            ):
                found.append(
                    f"line {node.lineno}: {ast.unparse(target)} = ... (changes a model from outside)"
                )
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))


def is_model(expr: ast.expr) -> bool:
    """``model`` or ``<anything>.model``: the conventional names of a model held by someone else."""
    return (isinstance(expr, ast.Name) and expr.id == "model") or (
        isinstance(expr, ast.Attribute) and expr.attr == "model"
    )


def test_the_patch_detector_sees_patches() -> None:
    source = (
        "import sys\nimport modalrec.train as t\nfrom torch import distributed as dist\n"
        "sys.stdout = None\nt.evaluate = None\nsetattr(dist, 'x', 1)\ntrainer.model.train_step = f\n"
        "self.forward = g\nobj.value = 3\nmodel.cfg = None\n"
    )
    found = patching_assignments(ast.parse(source))
    assert [f.split(":")[0] for f in found] == ["line 4", "line 5", "line 6", "line 7", "line 10"], found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_patches_another_module_or_a_model(name: str) -> None:
    found = patching_assignments(ast.parse(MODULES[name].read_text()))
    assert not found, f"{name} patches at run time:\n" + "\n".join(found)


# ---- the worked example of docs/architecture.md -------------------------------------------------------------------


def example_model_source() -> str:
    text = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    blocks = text.split("```python\n")[1:]
    source = next(b.split("```")[0] for b in blocks if b.startswith('"""SimpleGCN'))
    return source


def test_the_worked_example_trains_and_propagates_as_written(
    tiny: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("simplegcn_example")  # dataclasses look their module up in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(example_model_source(), "docs/architecture.md", "exec"), module.__dict__)
    cls: Any = module.SimpleGCN
    monkeypatch.setitem(MODELS, "simplegcn", cls)
    sets = [
        "train.epochs=2",
        "train.batch_size=512",
        "eval.ks=[10,20]",
        "train.threads=1",
        "model.n_layers=2",
    ]
    result = train(load_config(None, sets, model_name="simplegcn"), data=tiny, out=tmp_path / "run")
    assert result.metrics["epochs_run"] == 2 and (tmp_path / "run" / "checkpoint.pt").exists()

    # forward = (x + Âx + Â²x) / 3 with the dense Â = D^-1/2 [[0, R], [Rᵀ, 0]] D^-1/2 of the tiny graph
    model = result.model
    r = torch.tensor(tiny.train.toarray())
    a = torch.zeros(tiny.n_users + tiny.n_items, tiny.n_users + tiny.n_items)
    a[: tiny.n_users, tiny.n_users :], a[tiny.n_users :, : tiny.n_users] = r, r.T
    d = a.sum(1).clamp_min(1).rsqrt()
    a = d[:, None] * a * d[None, :]
    x = torch.cat([model.user_emb, model.item_emb]).detach()
    expected = (x + a @ x + a @ (a @ x)) / 3
    with torch.no_grad():
        emb = model()
    torch.testing.assert_close(torch.cat([emb.users, emb.items]), expected, rtol=1e-4, atol=1e-5)
