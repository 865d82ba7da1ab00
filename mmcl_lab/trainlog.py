"""The training log of a run: one row per optimiser step in <run>/train_log.csv, written as training goes, optionally
mirrored to TensorBoard, and handed to any callbacks the caller attaches (a W&B or MLflow logger, say).

Columns: step (over the whole run), task, epoch, loss, each term the method's loss returns, lr (of the first
parameter group), wall_time (Unix seconds). A resumed run drops the rows of the tasks it trains again and numbers
its steps on from the rows it keeps, so its log equals the uninterrupted run's apart from wall_time.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Iterable

from .utils import atomic_write_text

FIRST, LAST = ["step", "task", "epoch", "loss"], ["lr", "wall_time"]
Callback = Callable[[dict], None]  # called with each step's row


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a train_log.csv (a line a kill cut short is left out); [] when there is none."""
    if not path.exists():
        return []
    text = path.read_text()
    return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))


class TrainLog:
    """Numbers the steps of a run and writes each one to train_log.csv, TensorBoard and the callbacks."""

    def __init__(self, run_dir: Path, first_task: int = 0, tensorboard: bool = False,
                 callbacks: Iterable[Callback] = ()):
        self.path = Path(run_dir) / "train_log.csv"
        kept = [r for r in read_rows(self.path) if int(r["task"]) < first_task]  # the rest is trained again
        terms = [c for c in (kept[0] if kept else {}) if c not in FIRST + LAST and any(r[c] for r in kept)]
        self.columns = FIRST + terms + LAST
        self.step = int(kept[-1]["step"]) + 1 if kept else 0
        self._write_all(kept)
        self.callbacks = list(callbacks)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # the optional extra: mmcl_lab[tensorboard]
            # purge_step drops the events of steps this resumed run writes again
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=self.step)

    def _write_all(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n", extrasaction="ignore")  # terms left empty
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def __call__(self, row: dict) -> None:
        """Log one optimiser step: row has task, epoch, loss, the loss terms, lr and wall_time (not step)."""
        row = {"step": self.step, **row}
        self.step += 1
        new = [k for k in row if k not in self.columns]
        if new:  # a loss term seen for the first time (say a distillation term from the second task on)
            self.columns = self.columns[:-len(LAST)] + new + LAST
            self._write_all([*read_rows(self.path), row])
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, self.columns, lineterminator="\n").writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "task", "epoch", "wall_time"):
                    self.writer.add_scalar(f"train/{key}", value, row["step"], walltime=row["wall_time"])
        for callback in self.callbacks:
            callback(row)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self.writer is not None:
            self.writer.close()
