"""The repository keeps its promises: clean notebooks, data cards, matching install files, no import cycles."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from mmcl_lab.registry import DATASETS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/**/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_with_parameters_and_checks(path):
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    if path.parent.name in ("notebooks", "real"):  # CI notebooks read the preset and end with assertions
        assert "MMCL_PRESET" in params[0].source
        assert "assert " in code[-1].source


def test_every_dataset_has_a_card():
    cards = [p.read_text() for p in (ROOT / "data_cards").glob("*.md")]
    for name in DATASETS.names():
        if DATASETS.get(name).reads_path:  # a reader of your own files (folder:) ships no data to describe
            continue
        card = [c for c in cards if f"`{name}`" in c.split("\n")[0]]  # the card's title names the dataset
        assert card, f"no card in data_cards/ names `{name}` in its title"
        assert all(k in card[0] for k in ("Source", "Licence", "Classes", "Size"))


def test_environment_yml_installs_what_pyproject_pins():
    pyproject = (ROOT / "pyproject.toml").read_text()
    env = (ROOT / "environment.yml").read_text()
    pins = dict(re.findall(r'"(torch|torchaudio)==([\d.]+)"', pyproject))
    assert pins == dict(re.findall(r"- (torch|torchaudio)==([\d.]+)", env)) and len(pins) == 2
    assert "-e .[test]" in env


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    assert "mmcl-lab run --preset default" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def package_imports(root: Path = ROOT / "mmcl_lab") -> dict[str, set[str]]:
    """module -> the package modules it imports, read with ast: every import statement anywhere in the file (inside
    functions and under TYPE_CHECKING too), relative ones resolved, `from pkg import sub` as an edge to pkg.sub."""
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.split(".")[0] == root.name}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != root.name:
                    continue
                subs = {f"{base}.{alias.name}" for alias in node.names} & set(files)
                edges |= subs or {base}
        graph[module] = {e for e in edges if e in files and e != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = package_imports()
    assert len(graph) > 40 and "mmcl_lab.backbones.binding" in graph["mmcl_lab.backbones"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
