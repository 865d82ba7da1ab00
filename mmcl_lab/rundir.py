"""A run directory on disk: config, tidy results, probe snapshots, per-task checkpoints; every file written
atomically and every tensor file checksummed."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from .config import RunConfig, from_yaml, to_yaml
from .utils import (CorruptFile, atomic_write_bytes, atomic_write_json, atomic_write_text, digest, read_tensor_file,
                    rng_state, set_rng_state, tensor_file_bytes)

RESULT_COLUMNS = ["step", "task", "modality", "setting", "metric", "value", "n"]
RETRIEVAL_COLUMNS = ["step", "modality", "setting", "direction", "metric", "value", "queries"]
# 2: a method's state is its nn.Module state_dict (format 1 kept hand-written tensors and JSON values).
CHECKPOINT_FORMAT = 2
# provenance.json carries this key (with the run-folder format): the mark that mmcl_lab made the folder, so that
# --overwrite deletes nothing else. Runs made before the mark existed lack it and are treated as foreign.
RUN_MARKER = "mmcl_lab_run"


class RunLocked(OSError):
    """Another process is writing the same run folder."""


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file, checksum verified; anything else (a pickle, a torch.save file) is refused, never
    unpickled."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise ValueError(f"{path}: pickled checkpoints are refused (they can execute code); use .safetensors")
    return read_tensor_file(path, "pickled, truncated or corrupt files are refused")[0]


def config_digest(cfg: RunConfig) -> str:
    """sha256 of the config's YAML: checkpoints record it, so an edited config.yaml is caught on resume."""
    return digest(to_yaml(cfg))


def _tensors(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


class Run:
    """One experiment on disk; every file in it is written atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        done = self.latest_step()
        return f"Run({str(self.path)!r}, tasks done: {0 if done is None else done + 1})"

    def exists(self) -> bool:
        """Whether the directory holds a run (its config.yaml)."""
        return (self.path / "config.yaml").exists()

    def provenance(self) -> dict:
        """The run's provenance.json ({} when it is missing or unreadable)."""
        try:
            found = json.loads((self.path / "provenance.json").read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def is_ours(self) -> bool:
        """Whether mmcl_lab made this folder: its provenance.json carries the run marker."""
        return RUN_MARKER in self.provenance()

    @property
    def lock_path(self) -> Path:
        """The advisory lock file of this run, beside its folder."""
        return self.path.parent / f".{self.path.name}.lock"

    def _take(self, fd: int) -> None:
        """flock fd without waiting, or RunLocked naming the pid the holder wrote into the lock file."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunLocked(f"{self.lock_path}: {self.path} is being written by another mmcl-lab process (pid "
                            f"{holder}); wait for it to finish, or choose another --out") from None

    def check_unlocked(self) -> None:
        """RunLocked if another process holds the run's lock now (a probe that creates nothing)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            if os.pread(fd, 32, 0).decode(errors="replace").strip() != str(os.getpid()):  # not our own lock
                self._take(fd)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def lock(self):
        """Hold the run's advisory lock (an flock on .<name>.lock beside it) while writing; a second writer gets
        RunLocked naming the holder's pid. The lock file goes when it is released."""
        path = self.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                self._take(fd)
            except RunLocked:
                os.close(fd)
                raise
            try:  # the file may have been released and removed between our open and our lock: then try again
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.unlink(path)
            os.close(fd)  # closing releases the flock; unlinking first lets no one lock the old file

    def config(self) -> RunConfig:
        return from_yaml(self.path / "config.yaml")

    def results(self) -> pd.DataFrame:
        """The tidy results table (empty before the first evaluation)."""
        path = self.path / "results.csv"
        if not path.exists():
            return pd.DataFrame(columns=RESULT_COLUMNS)
        try:
            table = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptFile(f"{path}: not a readable results table ({type(err).__name__}); rerun the run") from None
        missing = [c for c in RESULT_COLUMNS if c not in table.columns]
        if missing:
            raise CorruptFile(f"{path}: not an mmcl_lab results table (no columns {missing})")
        torn = table[RESULT_COLUMNS].drop(columns="value").isna().any(axis=1)
        if torn.any() or not pd.api.types.is_numeric_dtype(table.value):
            row = int(torn.to_numpy().argmax()) + 2 if torn.any() else "?"
            raise CorruptFile(f"{path}: a torn results table (line {row} is incomplete); rerun the run")
        return table

    def write_results(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.path / "results.csv", df[RESULT_COLUMNS].to_csv(index=False))

    def retrieval(self) -> pd.DataFrame:
        """Recall@K and mAP per step, modality, setting and direction (evaluate.evaluate); empty before the
        first task is trained."""
        path = self.path / "retrieval.csv"
        if not path.exists():
            return pd.DataFrame(columns=RETRIEVAL_COLUMNS)
        try:
            return pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptFile(f"{path}: not a readable retrieval table ({type(err).__name__}); rerun the run") from None

    def write_retrieval(self, step: int, rows: pd.DataFrame) -> None:
        """Record step's retrieval rows; they replace any of that step or later (a resumed run's recomputed ones)."""
        earlier = self.retrieval()
        table = pd.concat([earlier[earlier.step < step], rows], ignore_index=True) if len(earlier) else rows
        atomic_write_text(self.path / "retrieval.csv", table[RETRIEVAL_COLUMNS].to_csv(index=False))

    def train_log(self) -> pd.DataFrame:
        """One row per optimiser step: step, task, epoch, loss, the method's loss terms, lr, wall_time."""
        path = self.path / "train_log.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["step", "task", "epoch", "loss"])

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step_{step:03d}"

    def save_checkpoint(self, step: int, model: torch.nn.Module, method: torch.nn.Module, config: str,
                        scaler: torch.amp.GradScaler | None = None) -> None:
        """Model and method state dicts as checksummed safetensors; state.json, written last, marks the checkpoint
        complete and records the RNG states (CUDA's too, where there is a GPU), the float16 loss scaler's state,
        the format and the config it belongs to (config: its config_digest)."""
        d = self.checkpoint_dir(step)
        atomic_write_bytes(d / "model.safetensors", tensor_file_bytes(_tensors(model)))
        atomic_write_bytes(d / "method.safetensors", tensor_file_bytes(_tensors(method)))
        state = {"step": step, "format": CHECKPOINT_FORMAT, "rng": rng_state(), "config": config}
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()  # plain numbers: JSON as it is
        atomic_write_json(d / "state.json", state)

    def complete_steps(self) -> list[int]:
        """Steps whose checkpoint is complete, oldest first."""
        return sorted(int(p.parent.name.split("_")[1]) for p in (self.path / "checkpoints").glob("step_*/state.json"))

    def latest_step(self) -> int | None:
        """The newest step whose checkpoint is complete."""
        return (self.complete_steps() or [None])[-1]

    def read_checkpoint(self, step: int) -> dict:
        """A checkpoint's model tensors, method tensors and JSON state, every file verified; CorruptFile if not."""
        d = self.checkpoint_dir(step)
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptFile(f"{d / 'state.json'}: unreadable checkpoint state ({type(err).__name__})") from None
        if not isinstance(state, dict) or not {"step", "rng"} <= set(state):
            raise CorruptFile(f"{d / 'state.json'}: checkpoint state without its step or RNG states")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{d / 'state.json'}: checkpoint format {state.get('format', 1)} from an older mmcl_lab "
                             f"(this one reads format {CHECKPOINT_FORMAT}); rerun with --overwrite")
        return {"model": load_tensors(d / "model.safetensors"), "method": load_tensors(d / "method.safetensors"),
                "state": state}

    def load_checkpoint(self, step: int, model: torch.nn.Module, method: torch.nn.Module,
                        ckpt: dict | None = None) -> None:
        """Put a checkpoint (read now, or already read by read_checkpoint) into model, method and the RNGs."""
        ckpt = ckpt or self.read_checkpoint(step)
        for name, module in (("model", model), ("method", method)):
            try:
                module.load_state_dict(ckpt[name])
            except RuntimeError as err:  # another model.dim, layers, feature space or method config
                lines = str(err).splitlines()
                raise ValueError(f"{self.checkpoint_dir(step) / f'{name}.safetensors'} does not fit this {name}: "
                                 f"{lines[1].strip() if len(lines) > 1 else err}") from None
        set_rng_state(ckpt["state"]["rng"])

    def save_probe(self, step: int, tensors: dict[str, Tensor]) -> None:
        atomic_write_bytes(self.path / "probes" / f"step_{step:03d}.safetensors", tensor_file_bytes(tensors))

    def probes(self) -> dict[int, dict[str, Tensor]]:
        """Probe embeddings per step (step -1 = before training)."""
        files = sorted((self.path / "probes").glob("step_*.safetensors"))
        return {int(p.stem.split("_")[1]): load_tensors(p) for p in files}

    def probe_meta(self) -> dict:
        return json.loads((self.path / "probes" / "meta.json").read_text())

    def memory_bytes(self) -> int:
        """Bytes the method kept across tasks (features, statistics, snapshots) after its last step."""
        path = self.path / "memory.json"
        return json.loads(path.read_text())["bytes"] if path.exists() else 0
