"""The repository keeps its promises: clean notebooks, data cards, matching install files, a small core."""

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
    if path.parent.name == "notebooks":  # CI notebooks read the preset and end with assertions
        assert "MMCL_PRESET" in params[0].source
        assert "assert " in code[-1].source


def test_every_dataset_has_a_card():
    cards = [p.read_text() for p in (ROOT / "data_cards").glob("*.md")]
    for name in DATASETS.names():
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


def test_core_stays_small():
    # The plug-in folders (one file per method, encoder or data source) grow with the registry, not the core.
    core = [p for p in (ROOT / "mmcl_lab").rglob("*.py") if p.parent.name not in ("methods", "encoders", "data")]
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in core}
    print("\n".join(f"{n:5d}  {p}" for p, n in sorted(sizes.items(), key=lambda kv: -kv[1])))
    assert sum(sizes.values()) < 3000 and max(sizes.values()) < 320, sizes
