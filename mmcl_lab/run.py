"""A run directory: config, results table, probe snapshots, per-task checkpoints, provenance; resume."""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save
from torch import Tensor

from .config import RunConfig, from_yaml, to_yaml
from .evaluate import evaluate
from .methods import Context, Method, check_assumptions, create_method
from .model import build_model
from .pretrain import weights_checksum
from .probe import capture
from .streams import TaskStream, build_stream
from .utils import (atomic_write_bytes, atomic_write_json, atomic_write_text, barrier, dist_info,
                    main_process_first, resolve_device, rng_state, seed_everything, set_rng_state)

RESULT_COLUMNS = ["step", "task", "modality", "setting", "metric", "value", "n"]


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file; anything else (a pickle, a torch.save file) is refused, never unpickled."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise ValueError(f"{path}: pickled checkpoints are refused (they can execute code); use .safetensors")
    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a valid safetensors file ({type(err).__name__}: {err}); "
                         "pickled or truncated files are refused") from None


def _split_state(state: dict) -> tuple[dict[str, Tensor], dict]:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, Tensor)}
    return tensors, {k: v for k, v in state.items() if not isinstance(v, Tensor)}


class Run:
    """One experiment on disk; every file in it is written atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        done = self.latest_step()
        return f"Run({str(self.path)!r}, tasks done: {0 if done is None else done + 1})"

    @classmethod
    def create(cls, cfg: RunConfig, path: str | Path) -> "Run":
        """A new run directory (an existing finished one is refused rather than overwritten)."""
        run = cls(path)
        if (run.path / "config.yaml").exists() and run.latest_step() is not None:
            raise FileExistsError(f"{run.path} already holds a run; resume it or choose another out_dir")
        atomic_write_text(run.path / "config.yaml", to_yaml(cfg))
        return run

    def config(self) -> RunConfig:
        return from_yaml(self.path / "config.yaml")

    def results(self) -> pd.DataFrame:
        """The tidy results table (empty before the first evaluation)."""
        path = self.path / "results.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)

    def write_results(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.path / "results.csv", df[RESULT_COLUMNS].to_csv(index=False))

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step_{step:03d}"

    def save_checkpoint(self, step: int, model: torch.nn.Module, method: Method) -> None:
        """Model and method tensors as safetensors, the rest as JSON; state.json last marks completeness."""
        d = self.checkpoint_dir(step)
        tensors, extra = _split_state(method.state_dict())
        atomic_write_bytes(d / "model.safetensors", save(_split_state(model.state_dict())[0]))
        atomic_write_bytes(d / "method.safetensors", save(tensors) if tensors else save({}))
        atomic_write_json(d / "state.json", {"step": step, "method": extra, "rng": rng_state()})

    def latest_step(self) -> int | None:
        """The newest step whose checkpoint is complete."""
        done = [int(p.parent.name.split("_")[1]) for p in (self.path / "checkpoints").glob("step_*/state.json")]
        return max(done) if done else None

    def load_checkpoint(self, step: int, model: torch.nn.Module, method: Method) -> None:
        d = self.checkpoint_dir(step)
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{d / 'state.json'}: unreadable checkpoint state ({err})") from None
        model.load_state_dict(load_tensors(d / "model.safetensors"))
        method.load_state_dict({**load_tensors(d / "method.safetensors"), **state["method"]})
        set_rng_state(state["rng"])

    def save_probe(self, step: int, tensors: dict[str, Tensor]) -> None:
        atomic_write_bytes(self.path / "probes" / f"step_{step:03d}.safetensors", save(tensors))

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


def run_dir_for(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """A directory named after the method and a hash of the config and the method's source code: re-running
    the same config resumes it; changing any field, or editing the method (say in a notebook), starts a new run
    instead of showing the old results."""
    from .registry import METHODS

    try:
        source = inspect.getsource(METHODS.get(cfg.method.name))
    except (OSError, TypeError, KeyError):  # no source to read (e.g. defined in a plain REPL)
        source = ""
    digest = hashlib.sha256((to_yaml(cfg) + source).encode()).hexdigest()[:8]
    return Path(root) / f"{cfg.method.name}-{digest}"


def provenance(device: torch.device) -> dict:
    """Package versions, git revision, Python and device: what produced a run."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    packages = ("mmcl_lab", "torch", "torchaudio", "numpy", "transformers", "safetensors")
    return {"git_revision": rev, "python": platform.python_version(), "platform": platform.platform(),
            "packages": {name: installed(name) for name in packages}, "device": str(device),
            "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_stream(cfg: RunConfig, out_dir: str | Path | None = None, stream: TaskStream | None = None,
               stop_after: int | None = None) -> Run:
    """Train on every task in order, evaluating and probing after each; resumes a partial run in out_dir."""
    run_dir = Path(out_dir or cfg.out_dir)
    with main_process_first():
        run = Run(run_dir) if (run_dir / "config.yaml").exists() else Run.create(cfg, run_dir)
    if (run_dir / "config.yaml").exists() and to_yaml(run.config()) != to_yaml(cfg):
        raise ValueError(f"{run_dir} holds a run with a different config; choose another out_dir")
    stream = stream if stream is not None else build_stream(cfg)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.seed)
    method = create_method(cfg.method)
    model = build_model(stream, cfg.model, pretrained=method.pretrained).to(device)
    check_assumptions(method, stream)
    context = Context(cfg.stream.modalities, device, cfg.seed, stream.backbone)
    method.setup(model, context)
    done, results = run.latest_step(), run.results()
    rank, world = dist_info()
    if done is None:
        if rank == 0:
            atomic_write_json(run.path / "provenance.json",
                              {**provenance(device), "prep_seconds": stream.prep_seconds, "world_size": world,
                               "start_weights": weights_checksum(model.state_dict()),
                               "backbone": stream.backbone.key if stream.backbone else None})
        results = _record(run, results, model, method, stream, -1, device)
        start = 0
    else:
        for task in stream.tasks[:done + 1]:
            context.reveal(task)
        run.load_checkpoint(done, model, method)
        results = results[results.step <= done]  # rows of an unfinished step are recomputed
        start = done + 1
    for task in stream.tasks[start:]:
        if stop_after is not None and task.id > stop_after:
            break
        context.reveal(task)
        method.before_task(model, task)
        method.fit_task(model, task, cfg.train)
        method.after_task(model, task)
        results = _record(run, results, model, method, stream, task.id, device)
        if rank == 0:
            run.save_checkpoint(task.id, model, method)
            atomic_write_json(run.path / "memory.json", {"step": task.id, "bytes": method.memory_bytes()})
        barrier()
    _check_replicas(model)
    return run


def _check_replicas(model) -> None:
    """Under torchrun, every process must end with the same weights; fail loudly if they diverged."""
    rank, world = dist_info()
    if world == 1:
        return
    device = model.class_text.device  # nccl gathers CUDA tensors, gloo CPU ones
    checksum = torch.tensor([float(sum(p.double().sum() for p in model.parameters()))], device=device)
    sums = [torch.zeros(1, device=device) for _ in range(world)]
    torch.distributed.all_gather(sums, checksum)
    if len({round(s.item(), 6) for s in sums}) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: parameter sums {[s.item() for s in sums]}")


def _record(run: Run, results: pd.DataFrame, model, method, stream, step: int, device) -> pd.DataFrame:
    rows = pd.DataFrame(evaluate(model, method, stream, step, device), columns=RESULT_COLUMNS)
    results = pd.concat([results[results.step != step], rows], ignore_index=True) if len(results) else rows
    if dist_info()[0] != 0:  # replicas hold the same model; only the first process writes
        return results
    run.write_results(results)
    tensors, meta = capture(model, method, stream, device)
    run.save_probe(step, tensors)
    if step == -1:
        atomic_write_json(run.path / "probes" / "meta.json", meta)
    return results


def resume(run_dir: str | Path, stream: TaskStream | None = None) -> Run:
    """Continue a run after its newest complete checkpoint."""
    run = Run(run_dir)
    if not (run.path / "config.yaml").exists():
        raise FileNotFoundError(f"{run.path}: no config.yaml, not a run directory")
    return run_stream(run.config(), run.path, stream)

