"""Running a stream into a run directory (rundir.py): preflight checks, the device, the backbone by the factory
and the method by the registry, creation in one rename, training task by task, checkpoints, provenance; resume;
and many runs sharing their streams and backbones (compare and tune).

The order of a run: check what this machine must provide (preflight), pick the device, build the stream (data
and features, on that device), build the backbone (pretrained on that device, or read from the cache), then seed
and make the method and the model, and train.
"""

from __future__ import annotations

import errno
import inspect
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .backbones import Backbone, build_backbone
from .backbones.binding import weights_checksum
from .config import RunConfig, to_dict, to_yaml
from .evaluate import evaluate
from .methods import Context, check_assumptions, create_method
from .probe import capture
from .registry import DATASETS
from .rundir import (RESULT_COLUMNS, RETRIEVAL_COLUMNS, RUN_MARKER, Run, config_digest,  # noqa: F401
                     load_tensors)  # load_tensors: public
from .streams import TaskStream, build_stream
from .timing import phase
from .trainlog import Callback, TrainLog
from .utils import (CorruptFile, atomic_write_json, atomic_write_text, barrier, clean_stale_tmp, compute_dtype, digest,
                    dist_info, from_rank0, fsync_dir, resolve_device, seed_everything)


def run_dir_for(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """A directory named after the method and a hash of the config and the method's source code: re-running
    the same config resumes it; changing any field, or editing the method (say in a notebook), starts a new run
    instead of showing the old results."""
    from .registry import METHODS

    try:
        source = inspect.getsource(METHODS.get(cfg.method.name))
    except (OSError, TypeError, KeyError):  # no source to read (e.g. defined in a plain REPL)
        source = ""
    return Path(root) / f"{cfg.method.name}-{digest(to_yaml(cfg) + source, 8)}"


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


def fingerprints(stream: TaskStream, backbone: Backbone) -> dict:
    """Checksums of the stream's data, encoders and features and of the backbone (its weights, and what it was
    pretrained on): what a user compares to tell whether two machines hold the same bits."""
    return {"stream": stream.fingerprints, "backbone": backbone.fingerprints()}


def run_stream(cfg: RunConfig, out_dir: str | Path | None = None, stream: TaskStream | None = None,
               stop_after: int | None = None, overwrite: bool = False, backbone: Backbone | None = None,
               callbacks: Sequence[Callback] = (), on_task: Callable[[int, pd.DataFrame], None] | None = None) -> Run:
    """Train on every task in order, evaluating and probing after each; resumes a partial run in out_dir.
    A stream and a backbone built for this config can be passed in to share them between runs. Each training
    step's losses go to <run>/train_log.csv and to every callback (called with the step's row, a dict); on_task
    is called after each task's results and checkpoint are written, with the task id and the results so far (an
    exception it raises, say a tuner's pruning, stops the run there, resumable).

    Nothing is written until the config, the device, the paths and the data have all passed; the run directory
    then appears whole (config, provenance, the step -1 results and probes) or not at all. overwrite=True
    replaces a run with another config (say a diverged one) once the new one has got that far."""
    run = Run(out_dir or cfg.out_dir)
    preflight(cfg, run.path, overwrite)  # fail fast, before the lock is taken
    with run.lock() if dist_info()[0] == 0 else nullcontext():  # one writer per run folder
        return _run_locked(cfg, run, stream, stop_after, overwrite, backbone, callbacks, on_task)


def _run_locked(cfg: RunConfig, run: Run, stream: TaskStream | None, stop_after: int | None, overwrite: bool,
                backbone: Backbone | None, callbacks: Sequence[Callback], on_task) -> Run:
    # again, now that no other writer can change the folder; under torchrun what rank 0 found holds for all
    resuming = from_rank0(preflight(cfg, run.path, overwrite))
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and cfg.train.deterministic:  # CUBLAS_WORKSPACE_CONFIG is set on import (__init__.py)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    stream = stream if stream is not None else build_stream(cfg, device=device)
    backbone = backbone if backbone is not None else build_backbone(cfg, stream, device)
    seed_everything(cfg.seed)
    method = create_method(cfg.method)
    model = backbone.model(stream, pretrained=method.pretrained).to(device)
    check_assumptions(method, stream)
    context = Context(cfg.stream.modalities, device, cfg.seed, backbone, cfg.train.eval_batch_size)
    if compute_dtype(device, cfg.train.precision) == torch.float16:  # float16 gradients need loss scaling
        context.scaler = torch.amp.GradScaler(device.type)
    method.setup(model, context)
    if resuming:
        start, results = _restore(run, cfg, model, method, stream, context)
        method.to(device)  # entries a checkpoint adds arrive on the CPU
    else:
        results = _create(run, cfg, model, method, stream, backbone, device)
        start = 0
    if dist_info()[0] == 0:
        context.log = TrainLog(run.path, start, cfg.train.tensorboard, callbacks)
    try:
        _train(cfg, run, results, model, method, stream, context, start, stop_after, device, on_task)
    finally:
        if context.log is not None:
            context.log.close()
    _check_replicas(model, device)
    return run


def _train(cfg: RunConfig, run: Run, results: pd.DataFrame, model, method, stream: TaskStream, context: Context,
           start: int, stop_after: int | None, device: torch.device, on_task=None) -> None:
    """Train, evaluate, probe and checkpoint each task from start on."""
    config = config_digest(cfg)  # what every checkpoint records (once: it serialises the whole config)
    for task in stream.tasks[start:]:
        if stop_after is not None and task.id > stop_after:
            break
        context.reveal(task)
        # The hooks outside the training loop always see the model in eval mode (a fresh or resumed model starts in
        # train mode, and the transformer's eval fast path rounds differently): resumed equals uninterrupted.
        model.eval()
        with phase("train"):
            method.before_task(model, task)
            method.fit_task(model, task, cfg.train)
            method.after_task(model, task)
        results = _record(run, results, model, method, stream, task.id, device, cfg.train.eval_batch_size)
        if dist_info()[0] == 0:
            with phase("checkpoint"):
                run.save_checkpoint(task.id, model, method, config, context.scaler)
                atomic_write_json(run.path / "memory.json", {"step": task.id, "bytes": method.memory_bytes()})
        barrier()
        if on_task is not None:
            on_task(task.id, results)


def run_many(jobs: list[tuple[RunConfig, Path]], desc: str = "runs") -> Iterator[Run]:
    """Run (or resume) every (config, run directory) job in order, building each distinct stream and backbone
    once: runs whose configs differ only in the method, the training budget or a seed that no data choice
    depends on share them. The one loop behind `compare`."""
    shared: dict = {}
    for cfg, out in tqdm(jobs, desc=desc, unit="run", disable=dist_info()[0] > 0):
        stream, backbone = prepared(cfg, shared)
        yield run_stream(cfg, out, stream, backbone=backbone)


def prepared(cfg: RunConfig, shared: dict) -> tuple[TaskStream, Backbone]:
    """cfg's stream and backbone, built once per distinct data key and kept in shared (a dict the caller holds for
    as long as its runs may share them)."""
    key = _data_key(cfg)
    if key not in shared:
        device = resolve_device(cfg.train.device)
        stream = build_stream(cfg, device=device)
        shared[key] = stream, build_backbone(cfg, stream, device)
    return shared[key]


def _data_key(cfg: RunConfig) -> str:
    """What a run's stream and backbone depend on: the config without the method and training budget, and
    with the run seed only when the task order or the split follows it."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in ("method", "train", "seed", "out_dir")}
    follows_seed = cfg.stream.order == "random" or cfg.data.vary_split
    return digest({**data, "seed": cfg.seed if follows_seed else None, "device": cfg.train.device})


def preflight(cfg: RunConfig, out_dir: str | Path, overwrite: bool = False) -> bool:
    """Every check that needs no data, before anything is built or written: the run folder can hold this run,
    the paths and the device exist. Returns whether out_dir holds this run already (to be resumed)."""
    run = Run(out_dir)
    if run.path.is_symlink():
        raise ValueError(f"{run.path}: the run folder is a symbolic link (to {os.readlink(run.path)}); give the folder "
                         "it points to")
    existing = next(p for p in (run.path, *run.path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing}: exists and is not a folder, so {run.path} cannot be created; "
                                 "choose another out_dir")
    if dist_info()[0] == 0:  # under torchrun rank 0 holds the lock for every process
        run.check_unlocked()  # a writer at work says so before the folder is read
    if not os.access(existing, os.W_OK):
        raise PermissionError(errno.EACCES, "cannot write there (read-only or another user's folder)", str(existing))
    clean_stale_tmp(run.path.parent, f".{run.path.name}.*.tmp", recursive=False)  # a killed creation's staging
    if run.path.is_dir() and any(run.path.iterdir()):
        refuse_foreign(run)
        clean_stale_tmp(run.path)
        if not overwrite:
            if not run.exists():
                raise FileNotFoundError(f"{run.path / 'config.yaml'}: missing from the run; rerun with --overwrite")
            if to_yaml(run.config()) != to_yaml(cfg):
                raise ValueError(f"{run.path} holds a run with a different config ({_tasks_done(run)}); resume it, "
                                 "choose another out_dir, or pass --overwrite to replace it")
            if run.provenance().get("config") != config_digest(cfg):
                raise ValueError(f"{run.path / 'config.yaml'} was edited after the run was created; restore it, or "
                                 "rerun with --overwrite")
    check_paths(cfg)
    compute_dtype(resolve_device(cfg.train.device), cfg.train.precision)  # fp16 without CUDA fails here
    return run.exists() and not overwrite


def refuse_foreign(run: Run) -> None:
    """A folder that mmcl_lab did not make (no run marker), or one with a symbolic link inside, is neither resumed,
    written to nor replaced: an error that names the file making it foreign."""
    if not run.is_ours():
        what = "config.yaml" if run.exists() else "provenance.json"
        if not run.exists() and not (run.path / what).exists():
            raise FileExistsError(f"{run.path}: a folder that holds files but no run; choose an empty or new out_dir")
        raise FileExistsError(f"{run.path / what}: {run.path} is not a run that mmcl_lab made (provenance.json has no "
                              f"{RUN_MARKER!r} marker), so it is neither resumed nor replaced; choose another out_dir")
    for root, dirs, files in os.walk(run.path):
        for name in (*dirs, *files):
            if os.path.islink(os.path.join(root, name)):
                raise ValueError(f"{os.path.join(root, name)}: a symbolic link inside the run folder; mmcl_lab never "
                                 "writes through one: replace it with a real folder or file")


def _tasks_done(run: Run) -> str:
    done = run.latest_step()
    return "no task finished yet" if done is None else f"{done + 1} tasks finished"


def check_paths(cfg: RunConfig) -> None:
    """Folder datasets and local encoder weights named in cfg exist (checked before anything is written)."""
    for m, entry in cfg.modalities.items():
        reader, _, where = entry.data.partition(":")
        where = where.partition("?")[0]
        if reader in DATASETS and DATASETS.get(reader).reads_path and not Path(where).expanduser().exists():
            raise FileNotFoundError(f"modalities.{m}.data: {reader} {where!r} does not exist")
    encoders = {f"modalities.{m}.encoder": entry.encoder for m, entry in cfg.modalities.items()}
    for key, spec in {**encoders, "encoders.text": cfg.encoders.text}.items():
        _, _, where = spec.partition("@")
        if where.startswith(("/", ".", "~")) and not Path(where).expanduser().exists():
            raise FileNotFoundError(f"{key}: weights directory {where!r} does not exist")


def _create(run: Run, cfg: RunConfig, model, method, stream, backbone: Backbone, device) -> pd.DataFrame:
    """Write config, provenance and the step -1 results and probes into a staging folder beside the run, then
    rename it into place: a run directory exists whole or not at all."""
    embedded: dict = {}  # the test data's embeddings, which the probes reuse
    with phase("evaluate"):
        accuracy = evaluate(model, method, stream, -1, device, cfg.train.eval_batch_size, embedded)[0]
    results = pd.DataFrame(accuracy, columns=RESULT_COLUMNS)
    if dist_info()[0] == 0:
        stage = Run(run.path.parent / f".{run.path.name}.{os.getpid()}.creating.tmp")
        shutil.rmtree(stage.path, ignore_errors=True)
        atomic_write_text(stage.path / "config.yaml", to_yaml(cfg))
        atomic_write_json(stage.path / "provenance.json",
                          {RUN_MARKER: 1, "config": config_digest(cfg), **provenance(device),
                           "prep_seconds": stream.prep_seconds + backbone.seconds,
                           "world_size": dist_info()[1], "start_weights": weights_checksum(model.state_dict()),
                           "backbone": backbone.key, "fingerprints": fingerprints(stream, backbone)})
        manifest = stream.manifest()
        if len(manifest):  # which file was in which split
            atomic_write_text(stage.path / "manifest.csv", manifest.to_csv(index=False))
        _write_step(stage, results, model, method, stream, -1, device, cfg.train.eval_batch_size, embedded)
        if run.path.is_dir():  # an old run being overwritten, or an empty folder
            shutil.rmtree(run.path)
        os.replace(stage.path, run.path)
        fsync_dir(run.path.parent)
    barrier()
    return results


def _restore(run: Run, cfg: RunConfig, model, method, stream, context) -> tuple[int, pd.DataFrame]:
    """Load the newest checkpoint that reads back whole (falling back past corrupt ones) and check that the
    recorded rows and the config belong to it; returns (first task to train, results so far)."""
    results, steps, skipped = run.results(), run.complete_steps(), []
    for step in reversed(steps):
        try:
            ckpt = run.read_checkpoint(step)
            break
        except CorruptFile as err:
            skipped.append(err)
    else:
        ckpt, step = None, -1
    if steps and ckpt is None:
        raise CorruptFile(f"{run.path}: every checkpoint is corrupt; rerun with --overwrite")
    agreed = from_rank0(step)  # every process resumes where rank 0 does, whatever its own view of the folder
    if agreed != step:
        ckpt, step = (run.read_checkpoint(agreed) if agreed >= 0 else None), agreed
    for err in skipped:
        print(f"mmcl-lab: {err}; resuming from the checkpoint before it", file=sys.stderr)
    missing = sorted(set(range(-1, step + 1)) - set(results.step.astype(int)))
    if missing:
        raise ValueError(f"{run.path / 'results.csv'} lacks the rows of steps {missing} that its checkpoints "
                         "cover; the run cannot be resumed honestly: rerun with --overwrite")
    for task in stream.tasks[:step + 1]:
        context.reveal(task)
    if ckpt is not None:
        run.load_checkpoint(step, model, method, ckpt)
        if context.scaler is not None and "grad_scaler" in ckpt["state"]:
            context.scaler.load_state_dict(ckpt["state"]["grad_scaler"])
    return step + 1, results[results.step <= step]  # rows of an unfinished step are recomputed


def _check_replicas(model, device: torch.device) -> None:
    """Under torchrun, every process must end with the same weights; fail loudly if they diverged."""
    rank, world = dist_info()
    if world == 1:
        return
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in model.parameters()))], device=device)
    sums = [torch.zeros(1, device=device) for _ in range(world)]
    torch.distributed.all_gather(sums, checksum)
    if len({round(s.item(), 6) for s in sums}) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: parameter sums {[s.item() for s in sums]}")


def _record(run: Run, results: pd.DataFrame, model, method, stream, step: int, device,
            batch_size: int) -> pd.DataFrame:
    embedded: dict = {}  # the test data's embeddings, which the probes reuse
    with phase("evaluate"):
        accuracy, found = evaluate(model, method, stream, step, device, batch_size, embedded)
    rows = pd.DataFrame(accuracy, columns=RESULT_COLUMNS)
    results = pd.concat([results[results.step != step], rows], ignore_index=True) if len(results) else rows
    if dist_info()[0] == 0:  # replicas hold the same model; only the first process writes
        run.write_retrieval(step, pd.DataFrame(found, columns=RETRIEVAL_COLUMNS))
        _write_step(run, results, model, method, stream, step, device, batch_size, embedded)
    return results


def _write_step(run: Run, results: pd.DataFrame, model, method, stream, step: int, device, batch_size: int,
                embedded: dict) -> None:
    run.write_results(results)
    with phase("probes"):
        tensors, meta = capture(model, method, stream, device, batch_size, embedded)
        run.save_probe(step, tensors)
        if step == -1:
            atomic_write_json(run.path / "probes" / "meta.json", meta)


def resume(run_dir: str | Path, stream: TaskStream | None = None) -> Run:
    """Continue a run after its newest complete checkpoint."""
    run = Run(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run.path}: no config.yaml, not a run directory")
    refuse_foreign(run)  # before its config.yaml is even read
    return run_stream(run.config(), run.path, stream)

