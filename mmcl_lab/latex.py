"""LaTeX tables for papers (booktabs rules, the best value per column in bold), set by pandas' Styler."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

HIGHER_IS_BETTER = {"avg_acc": True, "last_acc": True, "avg_inc_acc": True, "forgetting": False, "bwt": True,
                    "fwt": True, "zscl_transfer": True, "zscl_avg": True, "zscl_last": True}  # growth: neither


def number(mean: float, half: float | None = None, digits: int = 3) -> str:
    """A cell: "$0.812 \\pm 0.010$", or "$0.812$" without an interval; "--" for NaN."""
    if not np.isfinite(mean):
        return "--"
    if half is None or not np.isfinite(half):
        return f"${mean:.{digits}f}$"
    return f"${mean:.{digits}f} \\pm {half:.{digits}f}$"


def best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True at the best value of each column whose direction HIGHER_IS_BETTER knows (ties all bold)."""
    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    for col in means.columns:
        if col in HIGHER_IS_BETTER and means[col].notna().any():
            values = means[col].round(3)  # bold what the printed digits show as best
            mask[col] = values == (values.max() if HIGHER_IS_BETTER[col] else values.min())
    return mask


def booktabs(cells: pd.DataFrame, bold: pd.DataFrame | None, caption: str, label: str,
             sources: Sequence[str]) -> str:
    """A table environment with \\toprule/\\midrule/\\bottomrule from string cells (maths already in $...$);
    text columns are escaped, cells where bold is True set in {\\boldmath ...}. The files the numbers came from go in
    comments above it."""
    text_cols = [c for c in cells.columns if not cells[c].astype(str).str.startswith(("$", "--")).all()]
    styler = cells.style.hide(axis="index").format(escape="latex", subset=text_cols).format_index(escape="latex",
                                                                                                   axis=1)
    if bold is not None:
        marks = bold.reindex_like(cells).fillna(False).to_numpy(dtype=bool)
        styler = styler.apply(lambda _: np.where(marks, "boldmath:--wrap;", ""), axis=None)
    body = styler.to_latex(hrules=True, caption=caption, label=label, position_float="centering",
                           column_format="l" * len(text_cols) + "r" * (len(cells.columns) - len(text_cols)))
    comments = "".join(f"% numbers from {s}\n" for s in sources)
    return f"% needs \\usepackage{{booktabs}}\n{comments}{body}"
