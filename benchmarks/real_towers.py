"""Feature extraction through a tiny random CLIP (the real adapter: its processor, its ViT, cut for prompts) on
the CPU, against EfficientNet-Lite0 in the same run, so that the ratio holds across machines.

    python benchmarks/real_towers.py [--n 512] [--batch-size 64]

Prints samples/s per encoder and cut (model.prompt_depth) on the bundled MNIST images.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch

from mmcl_lab.data import load_raw
from mmcl_lab.encoders import create_encoder
from mmcl_lab.encoders.tiny_checkpoints import save_tiny_clip
from mmcl_lab.features import encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images to encode")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    raw = load_raw("mnist", "image", args.n // 10, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_tiny_clip(f"{tmp}/clip")
        for spec, depth in ((f"image/clip@{clip}", 0), (f"image/clip@{clip}", 2), ("image/efficientnet_lite0", 0)):
            enc = create_encoder(spec, depth)
            encode(enc, raw, args.batch_size, progress=False)  # warm-up: first-call allocations and imports
            start = time.perf_counter()
            tokens = encode(enc, raw, args.batch_size, progress=False)
            seconds = time.perf_counter() - start
            rows.append({"encoder": spec.split("@")[0] + ("" if "@" not in spec else " (tiny)"), "prompt_depth": depth,
                         "samples": len(raw), "tokens": tuple(tokens.shape[1:]), "seconds": round(seconds, 2),
                         "samples/s": round(len(raw) / seconds, 1)})
    table = pd.DataFrame(rows)
    table["vs efficientnet"] = (table["samples/s"] / table["samples/s"].iloc[-1]).round(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
