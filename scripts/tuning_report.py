"""The tables and the best-so-far figure of docs/TUNING.md, from what `mmcl-lab tune` wrote.

    python scripts/tuning_report.py results/tune docs/tuning_curves.png > tuning_tables.md

Prints Markdown: each method's space with its source and any widening, the chosen setting with its validation mean
and spread over the tuning seeds, the best-so-far curve per method, and every configuration tried; draws the curves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from mmcl_lab.tune import space_of  # noqa: E402


def main(folder: str, figure: str) -> None:
    out = Path(folder)
    search, curves = pd.read_csv(out / "search.csv"), pd.read_csv(out / "curves.csv")
    widened = pd.read_csv(out / "widened.csv")
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())
    seeds = [c for c in search.columns if c.startswith("seed_")]
    rows, spaces = [], []
    for method, part in search.groupby("method", sort=False):
        done = part[part.state == "complete"]
        best = done.loc[done.val_avg_acc.idxmax()]
        scores = best[seeds].astype(float)
        rows.append(dict(method=method, trials=len(part), pruned=int((part.state == "pruned").sum()),
                         val_mean=round(best.val_avg_acc, 4), val_spread=round(scores.max() - scores.min(), 4),
                         setting=", ".join(f"`{k}={v:.3g}`" if isinstance(v, float) else f"`{k}={v}`"
                                           for k, v in tuned[method].items())))
        for key, rng in space_of(method).items():
            grown = widened[(widened.method == method) & (widened.param == key)]
            spaces.append(dict(method=method, knob=key, range=str(rng), source=rng.source,
                               widened="; ".join(f"round {r.round}: {r.side} edge -> {r.widened_to}"
                                                 for r in grown.itertuples()) or "no"))
    print("## Chosen settings (validation mean over the tuning seeds; spread = max - min over them)\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("\n## Search spaces and their sources\n")
    print(pd.DataFrame(spaces).to_markdown(index=False))
    wide = curves.pivot(index="trial", columns="method", values="best_so_far")
    print("\n## Best validation score so far, after each configuration\n")
    print(wide.round(4).to_markdown())
    fig, ax = plt.subplots(figsize=(7, 4))
    for method in wide.columns:
        ax.plot(wide.index, wide[method], marker=".", label=method)
    ax.set(xlabel="configurations tried", ylabel="best validation avg accuracy so far",
           title="Tuning: best so far per method (mmcl-lab tune)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    for method, part in search.groupby("method", sort=False):
        print(f"\n### {method}\n")
        print(part.drop(columns="method").dropna(axis=1, how="all").sort_values("trial")
              .to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
