"""Wall time of every notebook, run top to bottom in a fresh kernel, under each preset, with its slowest cell.

    python benchmarks/notebooks.py [--presets ci,default] [--apart] [--passes 2]

By default the notebooks run in order in one fresh temporary folder per preset, as a class steps through them: a run
that notebook 02 trains, 03 and 04 read. --apart runs each in a folder of its own, so each trains what it shows.
--passes 2 steps through them a second time in the same folders: every run is then read from its folder (runs are
named by their config, run.run_dir_for), as when a teacher has stepped through once before the class. The data,
feature and backbone caches are whatever state they are in (warm after the README's first command, the state a user
is in). Prints a table and writes benchmarks/out/notebooks.csv, and each executed notebook beside it.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat
import pandas as pd

from mmcl_lab.gallery import NOTEBOOKS, execute

OUT = Path(__file__).with_name("out")


def slowest_cell(nb) -> tuple[float, str]:
    """(seconds, first line) of the code cell that took longest, from the timings nbclient records per cell."""
    best = (0.0, "")
    for cell in nb.cells:
        timing = cell.metadata.get("execution", {})
        if cell.cell_type != "code" or "iopub.execute_input" not in timing:
            continue
        start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
        first = next((line for line in cell.source.splitlines() if line and not line.startswith("#")), "")
        best = max(best, ((end - start).total_seconds(), first[:70]))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="ci,default")
    parser.add_argument("--apart", action="store_true", help="each notebook in a folder of its own")
    parser.add_argument("--passes", type=int, default=1, help="steps through all notebooks, in the same folders")
    args = parser.parse_args()
    notebooks = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    OUT.mkdir(exist_ok=True)
    rows = []
    for preset in args.presets.split(","):
        with tempfile.TemporaryDirectory() as root:
            for step in range(1, args.passes + 1):
                for path in notebooks:
                    workdir = Path(root) / (path.stem if args.apart else "class")
                    workdir.mkdir(exist_ok=True)
                    executed, seconds = execute(path, preset, static=False, workdir=workdir)
                    # the executed notebook, to read its printed numbers against its story
                    nbformat.write(executed, OUT / f"{path.stem}.{preset}.pass{step}.ipynb")
                    cell_s, cell = slowest_cell(executed)
                    rows.append({"notebook": path.stem, "preset": preset, "pass": step, "seconds": round(seconds, 1),
                                 "slowest_cell_s": round(cell_s, 1), "slowest_cell": cell})
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    for (preset, step), part in table.groupby(["preset", "pass"], sort=False):
        worst = part.loc[part.slowest_cell_s.idxmax()]
        print(f"{preset}, pass {step}: {part.seconds.sum():.1f} s in all; slowest cell {worst.slowest_cell_s} s "
              f"({worst.notebook}: {worst.slowest_cell})")
    table.to_csv(OUT / "notebooks.csv", index=False)


if __name__ == "__main__":
    main()
