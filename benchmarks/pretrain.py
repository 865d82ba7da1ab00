"""Pretraining the backbone: corpus preparation, pretraining seconds and epochs, and zero-shot quality on the stream,
for each corpus shift and corpus size asked for.

    python benchmarks/pretrain.py [--preset default] [--shifts 0.5,1.0,1.5] [--sizes 10,20,40] [overrides ...]

Features are read from the cache (built on first use); pretraining itself always runs from scratch here, for each
(shift, samples per corpus class), and is timed. Prints one table each and writes benchmarks/out/pretrain.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from mmcl_lab.backbones.binding import AlignmentModel, build_corpus, pretrain
from mmcl_lab.batches import merge_spaces
from mmcl_lab.config import apply_overrides, load_config
from mmcl_lab.encoders import create_encoder
from mmcl_lab.evaluate import zero_shot_table
from mmcl_lab.streams import build_stream

OUT = Path(__file__).with_name("out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--shifts", default="1.0", help="comma-separated corpus shifts to pretrain with")
    parser.add_argument("--sizes", default="", help="comma-separated samples per corpus class (pretrain.n_per_class; "
                                                    "default: the preset's)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = load_config(args.preset, dict(o.split("=", 1) for o in args.overrides))
    stream = build_stream(apply_overrides(base, {"train.progress": False, "train.device": "cpu"}))
    text_tower = create_encoder(base.encoders.text)
    class_text = text_tower.encode(list(stream.class_prompts)).float()
    print(f"machine: {torch.get_num_threads()} torch threads, no GPU used")
    rows = []
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [base.pretrain.n_per_class]
    for shift, size in [(float(s), n) for s in args.shifts.split(",") for n in sizes]:
        cfg = apply_overrides(base, {"pretrain.shift": shift, "pretrain.n_per_class": size})
        start = time.perf_counter()
        corpus = build_corpus(cfg, text_tower)
        prep = time.perf_counter() - start
        spaces = merge_spaces([*stream.feature_spaces.items(), *corpus.feature_spaces.items()])
        start = time.perf_counter()
        state, epochs = pretrain(cfg, corpus, spaces, progress=False)
        seconds = time.perf_counter() - start
        model = AlignmentModel(spaces, class_text, cfg.model)
        model.load_backbone(state)
        table = pd.DataFrame(zero_shot_table(model, stream)).assign(
            shift=shift, per_class=size, corpus_samples=sum(len(p.y) for p in corpus.pools),
            vocabulary=len(corpus.class_names), corpus_prep_s=round(prep, 1), pretrain_s=round(seconds, 1),
            epochs=epochs)
        print(f"\nshift {shift}, {size} per class: corpus of {table.corpus_samples[0]} samples, {table.vocabulary[0]} "
              f"class names (prepared in {prep:.1f} s, cached afterwards); pretraining {seconds:.1f} s "
              f"({cfg.model.layers} layers x {cfg.model.dim}, {epochs} of at most {cfg.pretrain.epochs} epochs, "
              f"patience {cfg.pretrain.patience})")
        print(table[["modality", "known", "agnostic", "text_to_sample_r1", "chance_known", "chance_agnostic"]]
              .to_markdown(index=False, floatfmt=".3f"))
        rows.append(table)
    torch.manual_seed(base.seed)
    chance = pd.DataFrame(zero_shot_table(AlignmentModel(spaces, class_text, base.model), stream))
    print("\nrandom, never pretrained model (the `chance` method):")
    print(chance[["modality", "known", "agnostic", "text_to_sample_r1"]].to_markdown(index=False, floatfmt=".3f"))
    OUT.mkdir(exist_ok=True)
    pd.concat(rows).to_csv(OUT / "pretrain.csv", index=False)


if __name__ == "__main__":
    main()
