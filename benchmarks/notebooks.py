"""Wall time of every notebook, run top to bottom in a fresh kernel, under each preset.

    python benchmarks/notebooks.py [--presets ci,default]

Run it once before (caches cold) or after the first run of each preset (caches warm): the figures below are
warm, the state a user is in after the README's first command. Prints a table and writes
benchmarks/out/notebooks.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
            _, seconds = execute(path, preset, static=False)
            rows.append(dict(notebook=path.stem, preset=preset, seconds=round(seconds, 1)))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).pivot(index="notebook", columns="preset", values="seconds")
    table.loc["total"] = table.sum()
    print(table.to_markdown())
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "notebooks.csv")


if __name__ == "__main__":
    main()
