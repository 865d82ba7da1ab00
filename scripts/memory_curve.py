"""Accuracy against kept memory from a compare run's runs.csv: one point per variant (mean over seeds).

    python scripts/memory_curve.py results/interleaved/runs.csv docs/memory_curve.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

FAMILIES = {"er": "ER (buffer size)", "comm": "COMM (statistics)", "slca": "SLCA (statistics)"}
DEFAULTS = {"er": "er m=200", "comm": "comm full", "slca": "slca full"}  # the methods' default memory


def main(runs_csv: str, png: str) -> None:
    runs = pd.read_csv(runs_csv)
    runs = runs[runs.modality == "all"]
    runs = runs[runs.method.str.split().str[0].isin(FAMILIES) & ~runs.method.str.contains(" -|oracle")]
    runs = runs.assign(method=runs.method.replace(DEFAULTS))
    points = runs.groupby(["setting", "method"]).agg(acc=("avg_acc", "mean"), mb=("memory_MB", "mean"),
                                                     seeds=("seed", "nunique")).reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, setting in zip(axes, ("agnostic", "known")):
        for family, label in FAMILIES.items():
            p = points[(points.setting == setting) & (points.method.str.split().str[0] == family)].sort_values("mb")
            ax.plot(p.mb, p.acc, "o-", label=label)
            for _, row in p.iterrows():
                ax.annotate(row.method, (row.mb, row.acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("kept memory after the last task (MB, log scale)")
        ax.set_title(f"modality {'hidden' if setting == 'agnostic' else 'given'} at test time")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average accuracy (mean over seeds)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(points.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
