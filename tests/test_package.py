"""Properties of the package as a whole: short functions."""

import ast
from pathlib import Path

import kerascnn

MAX_LINES = 60  # of code, the docstring aside


def function_lengths():
    root = Path(kerascnn.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.body[0].end_lineno + 1 if ast.get_docstring(node) else node.lineno
                yield f"{path.relative_to(root.parent)}:{node.lineno} {node.name}", node.end_lineno - start + 1


def test_no_function_is_longer_than_about_60_lines():
    long = {name: n for name, n in function_lengths() if n > MAX_LINES}
    assert not long, long
