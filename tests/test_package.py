"""The package as a whole: short functions and modules, its layers (import-linter) and no import cycles, the README's
Python example working as written, and the wheel holding the package."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kerascnn
from tests.conftest import REPO

MAX_LINES = 60  # of code, the docstring aside
MAX_MODULE_LINES = 500


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


def test_no_module_is_longer_than_500_lines():
    root = Path(kerascnn.__file__).parent
    long = {str(p.relative_to(root.parent)): n for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_the_layers_contract_holds_and_covers_every_subpackage():
    """pyproject.toml's import-linter contract: each layer imports only the
    layers below it; every subpackage (and top-level module but errors) is
    in a layer, so none escapes it."""
    result = subprocess.run([shutil.which("lint-imports") or "lint-imports", "--no-cache"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "1 kept, 0 broken" in result.stdout, result.stdout[-3000:]
    contract = layers_contract()
    named = {part.strip() for layer in contract for part in layer.split("|")}
    root = Path(kerascnn.__file__).parent
    children = {f"kerascnn.{p.parent.name if p.name == '__init__.py' else p.stem}"
                for p in root.glob("*.py") if p.name != "__init__.py"} | \
               {f"kerascnn.{p.parent.name}" for p in root.glob("*/__init__.py")}
    assert children - {"kerascnn.errors"} == named


def layers_contract():
    """The layers of pyproject.toml's import-linter contract, top first."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    (contract,) = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers"
    return contract["layers"]


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
    assert {"kerascnn.analysis.evaluation", "kerascnn.runs.saved", "kerascnn.plots"} <= set(graph["kerascnn.analysis.evaluation"]) | \
        {"kerascnn.analysis.evaluation"}
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


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(real_data_dir, tmp_path):
    """Must show: the README's notebook example, pasted as written, works."""
    readme = (REPO / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "KERASCNN_DATA_DIR": str(real_data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fashion_mnist ['T-shirt/top', 'Trouser', 'Pullover']" in result.stdout
    assert (tmp_path / "saved_models" / "lenet.best.conv1.kernels.png").exists()
    assert (tmp_path / "saved_models" / "lenet5.keras").exists()


def test_public_names_are_never_shadowed_by_modules():
    """`from kerascnn import evaluate` is the function, even after the modules are imported."""
    import importlib

    root = Path(kerascnn.__file__).parent
    modules = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    assert not set(kerascnn.__all__) & modules
    for module in sorted(modules - {"__init__"}):
        importlib.import_module(f"kerascnn.{module}")
    for name in kerascnn.__all__:
        assert not isinstance(getattr(kerascnn, name), type(kerascnn)), name
    from kerascnn import evaluate, fit, visualize

    assert callable(evaluate) and callable(fit) and callable(visualize)


def test_every_generated_docs_block_has_its_script_entry():
    """Each `<!-- docs.py ID -->` block in docs/ is written by entry ID of
    benchmarks/docs.py, and each entry has its block."""
    import re

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import docs
    finally:
        sys.path.pop(0)
    blocks = {}
    for path in (REPO / "docs").glob("*.md"):
        text = path.read_text()
        opened = re.findall(r"<!-- docs.py ([\w-]+) -->", text)
        assert len(opened) == text.count("<!-- /docs.py -->"), path.name
        blocks.update({name: path.name for name in opened})
    assert blocks == {name: doc for name, (doc, _, _) in docs.ENTRIES.items()}


SDIST_SOURCES = ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "MANIFEST.in", "kerascnn")


def test_the_wheel_built_from_the_sdist_holds_every_package_file(tmp_path):
    """Everything under kerascnn/ that is not a cache (any template or data a
    later change adds too) is in the wheel; its version is kerascnn.__version__.
    A copy of the sources, so no build/ in the checkout leaks into the wheel;
    .ci/run builds the same way, isolated, and runs the main job from it."""
    import tarfile
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in SDIST_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                             str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    version = kerascnn.__version__
    wheel = zipfile.ZipFile(tmp_path / "dist" / f"kerascnn-{version}-py3-none-any.whl")
    names = set(wheel.namelist())
    package = {p.relative_to(REPO).as_posix() for p in (REPO / "kerascnn").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert package <= names, sorted(package - names)
    assert {n.split("/")[0] for n in names} == {"kerascnn", f"kerascnn-{version}.dist-info"}
    assert f"Version: {version}\n" in wheel.read(f"kerascnn-{version}.dist-info/METADATA").decode()
    assert "kerascnn = kerascnn.cli.commands:main" in wheel.read(f"kerascnn-{version}.dist-info/entry_points.txt").decode()
    assert f"kerascnn-{version}.dist-info/licenses/LICENSE" in names
    with tarfile.open(tmp_path / "dist" / f"kerascnn-{version}.tar.gz") as sdist:
        assert {f"kerascnn-{version}/CHANGELOG.md", f"kerascnn-{version}/LICENSE"} <= set(sdist.getnames())
    assert f"## {version}" in (REPO / "CHANGELOG.md").read_text()
