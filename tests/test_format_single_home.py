"""The Qwen-VL text format has one home, ``qwenvl_train.format``: no second ChatML renderer, label constant or tag
pattern grows elsewhere in the package.

A scan of the source (its string and number constants, docstrings and comments left out, since they may name the
format): a literal ``<|im_start|>`` / ``<|im_end|>`` outside ``format/`` would be a second renderer; an
``IGNORE_INDEX =`` or a ``-100`` outside ``format/render.py`` a second label constant; a pattern matching the
markup tags (``<(/?)(img|ref|box|quad)>`` and the like) outside ``format/markup.py`` a second tag scanner; the tag
constants (``IMG_START``, ``BOX_END``...) used or a ``Picture N:`` written outside ``format/`` a second writer of
the markup (``format.markup``'s writers are the one home: ``image_markup``, ``grounding_markup``,
``from_list_format``...).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import qwenvl_train

PACKAGE = Path(qwenvl_train.__file__).resolve().parent
FORMAT = PACKAGE / "format"
CHATML_LITERALS = ("<|im_start|>", "<|im_end|>")
_TAG = r"(?:img|ref|box|quad)"
#: What a pattern for the markup tags looks like: an optional slash after "<", or an alternation of tag names.
TAG_PATTERN = re.compile(rf"<(?:\(?/\?\)?|\[/\]\?)\(?(?:\?:)?{_TAG}|{_TAG}\s*\|\s*{_TAG}")
#: The text constants of the markup tags in ``format.tokens``: writing them is ``format.markup``'s.
TAG_CONSTANTS = {f"{tag}_{side}" for tag in ("IMG", "REF", "BOX", "QUAD") for side in ("START", "END")}
#: The start of the text standing for a picture (``Picture 1: <img>...``).
PICTURE_LITERAL = re.compile(r"^Picture \d*")


def _docstrings(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, value)`` of every string constant of the module but its docstrings (f-string parts included)."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _label_constants(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, what)`` of every ``-100`` and every assignment to a name holding ``IGNORE_INDEX``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and node.operand.value == 100
        ):
            yield node.lineno, "-100"
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, ast.Assign | ast.AnnAssign):
            for target in targets:
                if isinstance(target, ast.Name) and "IGNORE_INDEX" in target.id.upper():
                    yield node.lineno, f"{target.id} ="


def _tag_constants(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every use or import of a tag constant (``st.IMG_START``, ``from ..format.tokens import BOX_END``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in TAG_CONSTANTS:
            yield node.lineno, node.attr
        elif isinstance(node, ast.Name) and node.id in TAG_CONSTANTS:
            yield node.lineno, node.id
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in TAG_CONSTANTS:
                    yield node.lineno, alias.name


def offences(package: Path) -> list[str]:
    """One line per place that defines a piece of the format outside its home."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(package.parent)
        in_format = FORMAT in path.parents
        for line, value in _strings(tree):
            if not in_format and any(literal in value for literal in CHATML_LITERALS):
                found.append(f"{where}:{line}: ChatML literal {value!r} (use qwenvl_train.format.tokens)")
            if not in_format and PICTURE_LITERAL.match(value):
                found.append(
                    f"{where}:{line}: picture literal {value!r} (use qwenvl_train.format.markup.image_markup)"
                )
            if path != FORMAT / "markup.py" and TAG_PATTERN.search(value):
                found.append(
                    f"{where}:{line}: markup tag pattern {value!r} (use qwenvl_train.format.markup.find_tag)"
                )
        if not in_format:
            for line, name in _tag_constants(tree):
                found.append(
                    f"{where}:{line}: tag constant {name} (use the writers of qwenvl_train.format.markup)"
                )
        if path != FORMAT / "render.py":
            for line, what in _label_constants(tree):
                found.append(
                    f"{where}:{line}: label constant {what} (use qwenvl_train.format.render.IGNORE_INDEX)"
                )
    return found


def test_the_format_is_defined_only_in_the_format_package() -> None:
    assert offences(PACKAGE) == []


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ('CLOSE = "</img>"\n', None),
        ('PROMPT = "<|im_start|>user\\n"\n', "ChatML literal"),
        ('END = f"{x}<|im_end|>"\n', "ChatML literal"),
        ("IGNORE_INDEX = -100\n", "label constant IGNORE_INDEX ="),
        ("def loss(labels, ignore_index=-100):\n    pass\n", "label constant -100"),
        ('import re\nTAGS = re.compile(r"<(/?)(img|ref|box|quad)>")\n', "markup tag pattern"),
        ('import re\nBOX = re.compile("</?box>")\n', "markup tag pattern"),
        ('PATTERN = r"<(ref|box)>"\n', "markup tag pattern"),
        (
            "from ..format import tokens as st\nA = st.IMG_START + path + st.IMG_END\n",
            "tag constant IMG_START",
        ),
        ("from ..format.tokens import BOX_START\n", "tag constant BOX_START"),
        ('QUERY = f"Picture {n}: {x}"\n', "picture literal"),
    ],
)
def test_a_planted_copy_is_found(tmp_path: Path, planted: str, expected: str | None) -> None:
    package = tmp_path / "qwenvl_train"
    (package / "data").mkdir(parents=True)
    (package / "data" / "copy.py").write_text('"""Docstrings may say <|im_start|> and -100."""\n' + planted)
    found = offences(package)
    if expected is None:  # writing a tag is not scanning for tags
        assert found == []
    else:
        assert found and all(line.startswith("qwenvl_train/data/copy.py:") for line in found)
        assert any(expected in line for line in found)


def test_docstrings_may_name_the_format(tmp_path: Path) -> None:
    package = tmp_path / "qwenvl_train"
    package.mkdir()
    (package / "doc.py").write_text(
        '"""Labels are -100; a turn is <|im_start|>user ... <|im_end|>; <(/?)(img|ref)>."""\n'
    )
    assert offences(package) == []


def test_the_format_package_imports_only_itself_and_the_errors() -> None:
    """format/ is pure Python below every other part of the package: its own modules, errors, lazy, the stdlib."""
    allowed_parents = {"errors", "lazy"}
    heavy = {"torch", "numpy", "transformers", "PIL", "tiktoken", "qwenvl_train"}
    found = []
    for path in sorted(FORMAT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 2
                and (node.module or "") not in allowed_parents
            ):
                found.append(f"{path.name}: from ..{node.module or ''} import ...")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in heavy:
                found.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                found += [
                    f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in heavy
                ]
    assert found == []


def test_importing_the_format_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from qwenvl_train.format import boxes, markup, render, rules, sample, tokens\n"
        "import qwenvl_train.format as f\n"
        "[getattr(f, name) for name in f.__all__]\n"
        "prefixes = ('torch', 'numpy', 'transformers', 'PIL', 'tiktoken', 'qwenvl_train.data', 'qwenvl_train.model',\n"
        "            'qwenvl_train.inference', 'qwenvl_train.training', 'qwenvl_train.tokenizer')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in prefixes or m.startswith(prefixes)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
