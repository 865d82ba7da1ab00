"""Wall time of every notebook, run top to bottom in a fresh kernel, under each preset.

    python benchmarks/notebooks.py [--presets ci,default]

Each notebook runs in a fresh temporary folder, so its training runs start from scratch; the data, feature and
backbone caches are whatever state they are in (warm after the README's first command, the state a user is in).
Prints a table and writes benchmarks/out/notebooks.csv, and each executed notebook beside it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nbformat
import pandas as pd

from mmcl_lab.gallery import NOTEBOOKS, execute

OUT = Path(__file__).with_name("out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="ci,default")
    args = parser.parse_args()
    rows = []
    for preset in args.presets.split(","):
        for path in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
            with tempfile.TemporaryDirectory() as workdir:
                executed, seconds = execute(path, preset, static=False, workdir=Path(workdir))
            OUT.mkdir(exist_ok=True)  # the executed notebook, to read its printed numbers against its story
            nbformat.write(executed, OUT / f"{path.stem}.{preset}.ipynb")
            rows.append(dict(notebook=path.stem, preset=preset, seconds=round(seconds, 1)))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).pivot(index="notebook", columns="preset", values="seconds")
    table.loc["total"] = table.sum()
    print(table.to_markdown())
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "notebooks.csv")


if __name__ == "__main__":
    main()
