"""Peak memory of extraction and training as a folder dataset grows: does it stay flat?

    python benchmarks/data_scaling.py [--sizes 600,2000,6000]

For each size it writes a folder dataset of colour PNGs (MNIST digits, tinted, shifted and enlarged to 96 px;
10 classes), then measures in fresh processes, so that each peak is its own:
- extraction: `folder:` -> EfficientNet-Lite0 through the DataLoader, written shard by shard (cold cache);
- training, features left in the shards (encoders.in_memory_mb=0): one run of finetune, 10 epochs;
- training, features held in memory (the default below encoders.in_memory_mb), for comparison.
The backbone is pretrained (and cached) in between, unmeasured, so that both training rows time training alone.
Peak RSS is the process's ru_maxrss (it includes Python, torch and the model: the floor every row shares).
Prints the table and writes benchmarks/out/data_scaling.csv.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).with_name("out")
CLASSES = 10


def write_dataset(root: Path, n: int) -> None:
    """n colour PNGs in CLASSES folders, from MNIST's digits (real signals; the bundled image pool's 300 per class are
    reused, each copy with its own tint and shift)."""
    from PIL import Image

    from mmcl_lab.data.mnist import digits_by_class
    x, y, _ = digits_by_class(300, seed=0)
    rng = np.random.default_rng(0)
    for i in range(n):
        digit, label = x[i % len(x)], y[i % len(x)]
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        rgb = np.roll(digit, rng.integers(-3, 4, 2), axis=(0, 1))[..., None] * rng.uniform(0.3, 1.0, 3)
        Image.fromarray(rgb.astype(np.uint8)).resize((96, 96), Image.BILINEAR).save(folder / f"{i}.png")


def child(stage: str, root: str, cache: str, out: str) -> None:
    """One measured stage in this fresh process; prints a JSON line."""
    from mmcl_lab.config import load_config
    from mmcl_lab.run import run_stream
    from mmcl_lab.streams import build_stream
    overrides = {"modalities.image.data": f"folder:{root}", "modalities.image.encoder": "image/efficientnet_lite0",
                 "stream.modalities": "image", "data.n_per_class": 100_000, "data.cache_dir": cache,
                 "method.name": "finetune", "encoders.in_memory_mb": 0 if stage != "train_in_memory" else 2048}
    if stage == "pretrain":  # unmeasured: the backbone is cached, so that the training rows time training alone
        overrides["train.epochs"] = 1
    cfg = load_config("ci", overrides)
    start = time.perf_counter()
    if stage == "extract":
        build_stream(cfg, progress=False)
    else:
        run_stream(cfg, out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest DataLoader worker
    print(json.dumps({"stage": stage, "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_mb),
                      "workers_mb": round(workers_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="600,2000,6000", help="dataset sizes (images), comma-separated")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "ROOT", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            root, cache = Path(tmp) / f"data_{n}", Path(tmp) / f"cache_{n}"
            write_dataset(root, n)
            row = {"images": n}
            for stage in ("extract", "pretrain", "train_from_shards", "train_in_memory"):
                proc = subprocess.run([sys.executable, __file__, "--child", stage, str(root), str(cache),
                                       str(Path(tmp) / f"run_{n}_{stage}")], capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{stage} at {n} images failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if stage == "pretrain":
                    continue
                row[f"{stage} peak RSS (MB)"], row[f"{stage} s"] = result["peak_rss_mb"], result["seconds"]
                if stage == "extract":
                    row["extract worker peak RSS (MB)"] = result["workers_mb"]
            features_mb = n * 4 * 1280 * 4 / 2**20  # (N, 4 tokens, 1280) float32
            rows.append({**row, "features (MB, float32)": round(features_mb)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "data_scaling.csv", index=False)
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
