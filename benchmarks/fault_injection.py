"""Fault injection: SIGKILL `mmcl-lab run --preset ci` at random moments, resume, and compare with a clean run.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0]

Half of the rounds start from an empty cache, so their kills land in data generation, feature extraction and
pretraining; the other half start from a warm cache, so theirs land in training, evaluation and checkpointing.
Each round: a new run folder (and, cold, a new cache); start the run; kill it after a random delay, uniform over
the measured length of a clean run of that kind; start the same command again, which completes the caches and
resumes the run; then check that results.csv and every checkpoint are byte-equal to the clean run's and that no
temp file is left anywhere. Prints one line per round and a summary; exits 1 on any mismatch.
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
    warm_cache = work / "clean" / "cache"
    _, cold_seconds = _run(work / "clean" / "run", warm_cache)
    _, warm_seconds = _run(work / "clean" / "again", warm_cache)
    reference = _files(work / "clean" / "run")
    assert _files(work / "clean" / "again") == reference, "two clean runs differ"
    print(f"clean run: {cold_seconds:.1f} s from an empty cache, {warm_seconds:.1f} s from a warm one; "
          f"{len(reference)} result and checkpoint files")
    failures, killed = 0, 0
    for i in range(args.kills):
        root, cold = work / f"round_{i:02d}", i % 2 == 0
        delay = rng.uniform(0.5, cold_seconds if cold else warm_seconds)
        cache = root / "cache" if cold else warm_cache
        code, _ = _run(root / "run", cache, kill_after=delay)
        killed += code == -signal.SIGKILL
        done = len(list((root / "run" / "checkpoints").glob("step_*/state.json")))
        _run(root / "run", cache)
        same = _files(root / "run") == reference
        leftovers = [*root.rglob("*.tmp"), *warm_cache.rglob("*.tmp")]
        failures += (not same) or bool(leftovers)
        print(f"round {i:2d} ({'empty' if cold else 'warm'} cache): killed at {delay:5.1f} s "
              f"({'killed' if code else 'had finished'}, {done} tasks "
              f"checkpointed) -> resumed: {'byte-equal' if same else 'DIFFERENT'}, "
              f"{len(leftovers)} temp files left", flush=True)
        shutil.rmtree(root)
    print(f"{killed} of {args.kills} runs killed mid-way; {args.kills - failures} of {args.kills} resumed byte-equal "
          "with no temp file left")
    shutil.rmtree(work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
