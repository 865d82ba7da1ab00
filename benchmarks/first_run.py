"""The README's main job, timed by phase: once on an empty cache (what a new user waits for) and once warm.

    python benchmarks/first_run.py [--preset default] [--method comm]

Runs `mmcl-lab run --preset P --tuned method.name=M` twice in a fresh temporary folder: first with an empty
`MMCL_CACHE`, then with the cache the first run filled and a new run directory. Each phase is the time the run
spent in it alone (mmcl_lab/timing.py); "start-up and other" is the rest of the command's wall time (the Python
start, imports, loading the text encoder). Prints a table and writes benchmarks/out/first_run.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

OUT = Path(__file__).with_name("out")


def timed_run(workdir: Path, name: str, preset: str, method: str) -> dict[str, float]:
    """One `mmcl-lab run` in a subprocess on workdir's cache: its phases and its wall time, in seconds."""
    phases = workdir / f"{name}.json"
    env = {**os.environ, "MMCL_CACHE": str(workdir / "cache"), "MMCL_PHASES": str(phases), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mmcl_lab.cli", "run", "--preset", preset, "--tuned", f"method.name={method}",
           "--out", str(workdir / name)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    times = json.loads(phases.read_text())
    return {**times, "start-up and other": wall - sum(times.values()), "total": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--method", default="comm")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU" + (", CUDA available" if torch.cuda.is_available() else ""))
    with tempfile.TemporaryDirectory() as tmp:
        cold = timed_run(Path(tmp), "cold", args.preset, args.method)
        warm = timed_run(Path(tmp), "warm", args.preset, args.method)
    table = pd.DataFrame({"cold s": cold, "warm s": warm}).fillna(0.0).round(1)
    table.index.name = "phase"
    print(table.to_markdown())
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "first_run.csv")


if __name__ == "__main__":
    main()
