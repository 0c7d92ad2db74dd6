"""The package's layers, read from the source (an AST walk over ``src/qwenvl_train``, nothing imported):

- no import circle among modules at import time (module-level imports; those inside functions are lazy);
- no import from a lower layer to a higher one, module-level or inside a function, except the one documented
  exception (the original's API on the model and tokenizer classes imports the inference layer when called);
- no module named like a function its package exports (importing it would hide the function);
- every sub-command in ``commands/``: no parser registered (``def add_parser``, ``.add_parser(...)``,
  ``add_subparsers``) anywhere else but ``cli.py``;
- the use layer's one order inside it: ``inference`` never imports ``reports`` (the reports draw and score what
  inference produced);
- the scan engine (``data/engine/``) in files of at most ``ENGINE_MAX_LINES`` lines, one concern each.

Each violation is one line. ``python tests/test_layering.py`` prints them all.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "qwenvl_train"

#: The layer of each part of the package, lowest first: a module imports only from its own layer or lower ones.
LAYERS = {
    # 1: foundations, cheap to import.
    "errors": 1,
    "lazy": 1,
    "import_hooks": 1,
    "quiet": 1,
    "vocab": 1,
    "disk_full": 1,
    "outputs": 1,
    # 2: the Qwen-VL text format, pure Python.
    "format": 2,
    # 3: the tokenizer and the model, and their registration with the transformers Auto factories (its hook
    # imports them once transformers has loaded a factory).
    "tokenizer": 3,
    "model": 3,
    "registration": 3,
    # 4: data: scan engine, dataset, collator, check-data.
    "data": 4,
    # 5: what uses the model and the data.
    "inference": 5,
    "eval_mm": 5,
    "serve": 5,
    "training": 5,
    "export": 5,
    "demo": 5,
    "tiny": 5,
    "reports": 5,
    # 6: entry points, and the package itself (its public names, and installing the registration hook); one
    # module per sub-command in commands/.
    "": 6,
    "cli": 6,
    "commands": 6,
    "train": 6,
    "__main__": 6,
}

#: The documented exception: (module, function, imported module) — the original's API on the model and
#: tokenizer classes imports the inference layer inside the method, never at module level.
EXCEPTIONS = {
    ("qwenvl_train.model.modeling", "QwenVLForCausalLM.chat", "qwenvl_train.inference.chat"),
    ("qwenvl_train.model.modeling", "QwenVLForCausalLM.chat_stream", "qwenvl_train.inference.chat"),
    ("qwenvl_train.tokenizer", "QwenVLTokenizer.draw_bbox_on_latest_picture", "qwenvl_train.inference.draw"),
}


#: Parts of one layer that must not import another part of it: (importer, imported).
SAME_LAYER_FORBIDDEN = {("inference", "reports")}

#: The longest a module of the scan engine may be (a longer one mixes concerns: split it).
ENGINE_MAX_LINES = 450

#: Where sub-commands are registered: the commands package and the CLI that lists them.
COMMAND_HOMES = ("commands", "cli")


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    importer: str
    target: str
    path: str
    line: int
    function: str | None  # the enclosing function's qualified name; None at module level
    type_checking: bool  # under ``if TYPE_CHECKING:`` (never run)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of a ``qwenvl_train`` module in ``path``, with where it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    rel = str(path.relative_to(ROOT.parent))

    def add(target: str, node: ast.stmt, function: str | None, type_checking: bool) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            found.append(Import(name, target, rel, node.lineno, function, type_checking))

    def visit(node: ast.AST, function: str | None, scope: str, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, function, type_checking)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from pkg import submodule` imports the submodule; `from pkg import name` the package.
                add(sub if sub in modules else base, node, function, type_checking)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            qualname = f"{scope}{getattr(node, 'name', '<lambda>')}"
            for child in ast.iter_child_nodes(node):
                visit(child, function or qualname, qualname + ".", type_checking)
        elif isinstance(node, ast.ClassDef):
            for child in ast.iter_child_nodes(node):
                visit(child, function, f"{scope}{node.name}.", type_checking)
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, function, scope, True)
            for child in node.orelse:
                visit(child, function, scope, type_checking)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, function, scope, type_checking)

    visit(tree, None, "", False)
    return list(dict.fromkeys(found))


def all_imports() -> list[Import]:
    modules = all_modules()
    return [i for name, path in modules.items() for i in imports_of(name, path, modules)]


def part(module: str) -> str:
    rest = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    return rest.split(".")[0]


def layer(module: str) -> int | None:
    return LAYERS.get(part(module))


# ---------------------------------------------------------------------------------------------- the checks
def unplaced_modules() -> list[str]:
    return [f"{m}: not in the layer map (add its part to LAYERS)" for m in all_modules() if layer(m) is None]


def import_circles() -> list[tuple[str, tuple[str, ...]]]:
    """Each group of modules importing each other at import time (Tarjan's strongly connected components)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in all_imports():
        if i.function is None and not i.type_checking and i.target in modules and i.target != i.importer:
            graph[i.importer].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[tuple[str, ...]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(tuple(sorted(group)))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    lines = []
    for group in groups:
        edges = sorted(f"{a} -> {b}" for a in group for b in graph[a] if b in group)
        lines.append((f"import circle: {', '.join(group)} ({'; '.join(edges)})", group))
    return lines


def upward_imports() -> list[tuple[str, Import]]:
    """Each import of a higher layer (module-level or inside a function), the documented exception aside."""
    lines = []
    for i in all_imports():
        low, high = layer(i.importer), layer(i.target)
        if low is None or high is None or high <= low:
            continue
        if i.function is not None and (i.importer, i.function, i.target) in EXCEPTIONS:
            continue
        where = f"in {i.function}()" if i.function else "at module level"
        if i.type_checking:
            where += " under TYPE_CHECKING"
        lines.append(
            (f"{i.path}:{i.line}: {i.importer} (layer {low}) imports {i.target} (layer {high}) {where}", i)
        )
    return lines


def hidden_functions() -> list[tuple[str, tuple[str, str]]]:
    """Each name a package exports lazily (its ``{name: ".module"}`` map) that is also the name of one of its
    submodules: importing the submodule binds it on the package, hiding the exported function."""
    modules = all_modules()
    lines = []
    for package, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values, strict=True):
                lazy = isinstance(value, ast.Constant) and str(value.value).startswith(".")
                if lazy and isinstance(key, ast.Constant) and f"{package}.{key.value}" in modules:
                    sub = f"{package}.{key.value}"
                    lines.append((f"{sub}: a module named like the function {sub} it hides", (package, sub)))
    return lines


def forbidden_same_layer_imports() -> list[tuple[str, Import]]:
    """Each import between parts of one layer that :data:`SAME_LAYER_FORBIDDEN` keeps apart."""
    return [
        (
            f"{i.path}:{i.line}: {i.importer} imports {i.target} ({part(i.importer)} never imports {part(i.target)})",
            i,
        )
        for i in all_imports()
        if (part(i.importer), part(i.target)) in SAME_LAYER_FORBIDDEN
    ]


def parsers_outside_commands() -> list[tuple[str, str]]:
    """Each sub-command parser defined or registered outside ``commands/`` and ``cli.py``."""
    lines = []
    for name, path in all_modules().items():
        if part(name) in COMMAND_HOMES:
            continue
        rel = path.relative_to(ROOT.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "add_parser":
                lines.append(
                    (f"{rel}:{node.lineno}: defines add_parser (a command belongs in commands/)", name)
                )
            elif isinstance(node, ast.Attribute) and node.attr in ("add_parser", "add_subparsers"):
                lines.append(
                    (f"{rel}:{node.lineno}: calls {node.attr} (a command belongs in commands/)", name)
                )
    return lines


def check(found: list[tuple[str, Any]]) -> None:
    """Fail with every violation, one line each."""
    assert not found, "\n" + "\n".join(line for line, _ in found)


def test_every_module_is_in_the_layer_map() -> None:
    assert not unplaced_modules(), "\n" + "\n".join(unplaced_modules())


def test_no_import_circle() -> None:
    check(import_circles())


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    check(upward_imports())


def test_no_module_hides_a_function() -> None:
    check(hidden_functions())


def test_inference_never_imports_reports() -> None:
    check(forbidden_same_layer_imports())


def test_every_command_is_in_commands() -> None:
    check(parsers_outside_commands())


def test_scan_engine_files_stay_small() -> None:
    engine = ROOT / PACKAGE / "data" / "engine"
    long = {
        p.name: n
        for p in sorted(engine.glob("*.py"))
        if (n := len(p.read_text().splitlines())) > ENGINE_MAX_LINES
    }
    assert not long, f"data/engine/ modules over {ENGINE_MAX_LINES} lines (split them): {long}"


def test_the_exception_is_what_it_says() -> None:
    """The documented exception names methods that exist and import inside the method, never at module level."""
    imports = all_imports()
    for module, function, target in sorted(EXCEPTIONS):
        assert any((i.importer, i.function, i.target) == (module, function, target) for i in imports), (
            f"{module}.{function} no longer imports {target}: remove it from EXCEPTIONS"
        )
        assert not any(i.importer == module and i.target == target and i.function is None for i in imports), (
            f"{module} imports {target} at module level"
        )


if __name__ == "__main__":
    for line in unplaced_modules():
        print(line)
    found = import_circles() + upward_imports() + hidden_functions()
    for line, _ in found + forbidden_same_layer_imports() + parsers_outside_commands():
        print(line)
