"""Fault injection: SIGKILL `mmcl-lab run --preset ci` at random moments, from an empty cache (so kills land in
data generation, feature extraction, pretraining and training alike), resume, and compare with a clean run.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0]

Each round: an empty cache and run folder; start the run; kill it after a random delay (uniform over the
measured length of a clean run); start the same command again, which completes the caches and resumes the
run; then check that results.csv and every checkpoint are byte-equal to the clean run's and that no temp file
is left anywhere. Prints one line per round and a summary; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "mmcl_lab.cli", "run", "--preset", "ci", "method.name=comm"]


def _run(out: Path, cache: Path, kill_after: float | None = None) -> tuple[int, float]:
    env = {**os.environ, "MMCL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([*COMMAND, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr.read().decode()[-1500:]}")
    return proc.returncode, time.perf_counter() - start


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.name == "results.csv" or p.suffix == ".safetensors")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mmcl_faults_"))
    _, clean_seconds = _run(work / "clean" / "run", work / "clean" / "cache")
    reference = _files(work / "clean" / "run")
    print(f"clean run from an empty cache: {clean_seconds:.1f} s, {len(reference)} result and checkpoint files")
    failures, killed = 0, 0
    for i in range(args.kills):
        root = work / f"round_{i:02d}"
        delay = rng.uniform(0.5, clean_seconds)
        code, _ = _run(root / "run", root / "cache", kill_after=delay)
        killed += code == -signal.SIGKILL
        done = len(list((root / "run" / "checkpoints").glob("step_*/state.json")))
        _run(root / "run", root / "cache")
        same = _files(root / "run") == reference
        leftovers = [p for p in root.rglob("*.tmp")]
        failures += (not same) or bool(leftovers)
        print(f"round {i:2d}: killed at {delay:5.1f} s ({'killed' if code else 'had finished'}, {done} tasks "
              f"checkpointed) -> resumed: {'byte-equal' if same else 'DIFFERENT'}, "
              f"{len(leftovers)} temp files left", flush=True)
        shutil.rmtree(root)
    print(f"{killed} of {args.kills} runs killed mid-way; {args.kills - failures} of {args.kills} resumed byte-equal "
          "with no temp file left")
    shutil.rmtree(work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
