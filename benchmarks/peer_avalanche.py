"""Peer comparison: the same finetune / ER / EWC on the same cached features, in mmcl_lab and in Avalanche.

Split-MNIST on frozen EfficientNet-Lite0 features (5 tasks of 2 digits), the same head (mmcl_lab's
AlignmentModel scoring the MiniLM texts of the digit names), the same optimiser settings. Both evaluate on
every test task after every task. Avalanche's strategies train cross-entropy over all 10 classes (their
default); mmcl_lab's finetune and EWC over the current task's classes, ER over the seen ones.

    python benchmarks/peer_avalanche.py export    # in mmcl_lab's environment: writes the features
    python benchmarks/peer_avalanche.py compare   # where avalanche-lib is installed (plus mmcl_lab, --no-deps)

Each (method, library) is warmed up once (lazy imports, first calls), then timed REPEATS times, the two libraries
interleaved so that a slower minute of a shared machine falls on both; the table gives the median and the ratio.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

FILE = Path(__file__).with_name("out") / "split_mnist_features.safetensors"
SPACE, EPOCHS, BATCH, LR = "image/efficientnet_lite0", 6, 64, 2e-3
REPEATS = 3
PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def export() -> None:
    from mmcl_lab.config import load_config
    from mmcl_lab.data import split_indices, template_for
    from mmcl_lab.encoders import create_encoder
    from mmcl_lab.features import load_features

    cfg = load_config("default")
    image = cfg.modalities["image"]
    feats = load_features(image.data, "image", image.encoder, cfg.data.n_per_class, cfg.data.seed, cfg.data.cache_dir,
                          progress=False)
    raw, x = feats.raw, feats.tokens
    template = template_for(image.template, raw)
    text = create_encoder("text/minilm").encode([template.format(n) for n in raw.class_names])
    train, test = split_indices(raw.y, 0.3, 0)
    FILE.parent.mkdir(exist_ok=True)
    save_file({"x": x.contiguous(), "y": torch.from_numpy(raw.y), "text": text.contiguous(),
               "train": torch.from_numpy(train), "test": torch.from_numpy(test)}, str(FILE))
    print(f"wrote {FILE}")


def _stream(d):
    from mmcl_lab.streams import Task, TaskStream
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    tasks = []
    for tid, pair in enumerate(PAIRS):
        tr = d["train"][torch.isin(d["y"][d["train"]], torch.tensor(pair))]
        te = d["test"][torch.isin(d["y"][d["test"]], torch.tensor(pair))]
        tasks.append(Task(tid, "image", SPACE, pair, tuple(names[c] for c in pair), d["x"][tr], d["y"][tr],
                          d["x"][te], d["y"][te], tr.numpy(), te.numpy(), np.arange(min(6, len(te)))))
    return TaskStream(tasks, names, ("image",) * 10, names, {SPACE: (4, 1280)}, True), _untrained(d["text"])


def _untrained(text):
    """The same randomly initialised head for both libraries (no pretraining): a backbone whose text tower
    returns the exported MiniLM texts."""
    from mmcl_lab.backbones import Backbone
    from mmcl_lab.backbones.binding import AlignmentModel
    from mmcl_lab.config import ModelConfig

    class Untrained(Backbone):
        key, seconds, reference = "untrained", 0.0, None

        def encode_text(self, texts):
            return text

        def model(self, stream, pretrained=True):
            return AlignmentModel(stream.feature_spaces, text, ModelConfig())

        def checksum(self):
            return "untrained"
    return Untrained()


def ours(stream, backbone, method: str) -> tuple[float, float]:
    from mmcl_lab.config import load_config
    from mmcl_lab.metrics import accuracy_matrix, average_accuracy
    from mmcl_lab.run import run_stream

    cfg = load_config("default", {"method.name": method, "train.epochs": EPOCHS, "train.batch_size": BATCH,
                                  "train.lr": LR, "train.progress": False, "train.device": "cpu"})
    start = time.perf_counter()
    run = run_stream(cfg, tempfile.mkdtemp(), stream, backbone=backbone)
    seconds = time.perf_counter() - start
    return seconds, average_accuracy(accuracy_matrix(run.results(), "known")[0])


class _Features(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.targets = x, y, y.tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def theirs(stream, backbone, method: str) -> tuple[float, float]:
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import as_classification_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, Naive, Replay

    torch.manual_seed(0)
    head = backbone.model(stream)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, x):
            return self.head.logits(self.head.embed(x, SPACE))  # (B, 10)

    bench = benchmark_from_datasets(
        train=[as_classification_dataset(_Features(t.train_x, t.train_y)) for t in stream],
        test=[as_classification_dataset(_Features(t.test_x, t.test_y)) for t in stream])
    model = Classifier()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    common = dict(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=LR),
                  criterion=torch.nn.CrossEntropyLoss(), train_mb_size=BATCH,
                  train_epochs=EPOCHS, eval_mb_size=256, device="cpu", evaluator=evaluator)
    strategy = {"finetune": lambda: Naive(**common), "er": lambda: Replay(mem_size=200, **common),
                "ewc": lambda: EWC(ewc_lambda=1000.0, **common)}[method]()
    start = time.perf_counter()
    for exp in bench.train_stream:
        strategy.train(exp)
        last = strategy.eval(bench.test_stream)
    seconds = time.perf_counter() - start
    accs = [v for k, v in last.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    return seconds, float(np.mean(accs))


def compare() -> None:
    stream, backbone = _stream(load_file(str(FILE)))
    methods = ("finetune", "er", "ewc")
    for method in methods:  # warm-up: lazy imports and first calls (torch.func's, for EWC's per-sample Fisher: ~3 s)
        ours(stream, backbone, method), theirs(stream, backbone, method)
    rows = []
    for method in methods:
        times: dict[str, list[float]] = {"mmcl_lab": [], "avalanche 0.6.0": []}
        accs: dict[str, float] = {}
        for _ in range(REPEATS):
            for lib, fn in (("mmcl_lab", ours), ("avalanche 0.6.0", theirs)):
                seconds, acc = fn(stream, backbone, method)
                times[lib].append(seconds)
                accs[lib] = acc
        for lib, seconds in times.items():
            rows.append(dict(method=method, library=lib, seconds=round(float(np.median(seconds)), 2),
                             runs=" ".join(f"{t:.2f}" for t in seconds), avg_acc=round(accs[lib], 3)))
        rows[-2]["ratio"] = round(rows[-2]["seconds"] / rows[-1]["seconds"], 2)  # mmcl_lab / avalanche
    table = pd.DataFrame(rows)
    table.to_csv(FILE.with_name("peer_avalanche.csv"), index=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 5 tasks, {EPOCHS} epochs, batch {BATCH}; "
          f"median of {REPEATS} runs\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    {"export": export, "compare": compare}[sys.argv[1] if len(sys.argv) > 1 else "compare"]()
