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


def module_imports():
    """{module: kerascnn modules it imports, at module level or inside functions}."""
    root = Path(kerascnn.__file__).parent
    graph = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                found.add(base.strip("."))
                found |= {f"{base}.{a.name}".strip(".") for a in node.names}
        graph[name] = found
    return {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}


def test_no_import_cycle_between_kerascnn_modules():
    graph = module_imports()
    assert {"kerascnn.evaluation", "kerascnn.run", "kerascnn.plots"} <= set(graph["kerascnn.evaluation"]) | \
        {"kerascnn.evaluation"}
    visiting, done, cycles = [], set(), []

    def visit(module):
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
            return
        if module in done:
            return
        visiting.append(module)
        for other in sorted(graph[module]):
            # a package's __init__ importing its own submodules is how a package is made, not a cycle
            if not other.startswith(module + ".") or module == "kerascnn":
                visit(other)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not cycles, cycles
