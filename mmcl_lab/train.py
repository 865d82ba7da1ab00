"""The one training loop: methods return a loss, the loop owns zero_grad, backward and step."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .batches import Batch, iterate_batches, n_batches
from .streams import Task
from .utils import adamw, autocast, compute_dtype, dist_info


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last finished task's checkpoint is kept."""


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """This process's share of a batch under data parallelism (the whole batch when it is too small)."""
    if world == 1 or len(batch.y) < world:
        return batch
    index = None if batch.index is None else batch.index[rank::world]
    return Batch(batch.x[rank::world], batch.y[rank::world], batch.space, batch.modality, index, batch.pool)


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over the processes so every one takes the same step: DDP's bucketed all-reduce, one flat
    bucket per dtype, by hand (methods call model.embed rather than forward, which DistributedDataParallel's
    reducer needs to see each iteration)."""
    if world == 1:
        return
    buckets: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        buckets.setdefault(p.dtype, []).append(p)
    for bucket in buckets.values():
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in bucket]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,): one collective, not one per tensor
        torch.distributed.all_reduce(flat)
        flat /= world
        for p, g in zip(bucket, flat.split([g.numel() for g in grads])):
            p.grad = g.view_as(p)


@contextmanager
def frozen_except(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Turn off gradients of the model's parameters that are not in params for the block, and back on after: a
    frozen backbone under trained prompts then costs no weight-gradient matmuls in backward (the prompts' own
    gradients are the same computation, bit for bit). After the block, hooks that differentiate the whole model
    (EWC's Fisher) see it as before."""
    trained = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trained]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def train_task(model, method, task: Task, cfg: TrainConfig, generator: torch.Generator,
               device: torch.device, log: Callable[[dict], None] | None = None,
               scaler: torch.amp.GradScaler | None = None) -> None:
    """Optimise method.trainable_parameters() on task for cfg.epochs epochs with AdamW, mini-batches shuffled by
    generator (data-parallel under torchrun, in cfg.precision); log, if given, receives each step's losses
    (trainlog.TrainLog); scaler, the run's loss scaler, is what float16 needs (a pass-through otherwise)."""
    trainable = method.trainable_parameters(model, task)
    # Bare parameters share one group (a fused step updates a group at once); dicts are groups of their own.
    groups = [{"params": [p for p in trainable if not isinstance(p, dict)]},
              *(g for g in trainable if isinstance(g, dict))]
    groups = [{"params": [p for p in g["params"] if p.requires_grad], "lr": cfg.lr * g.get("lr_scale", 1.0)}
              for g in groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return
    opt = adamw(groups, device, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pools = method.training_batches(task)
    if sum(len(p.y) for p in pools) == 0:
        raise ValueError(f"task {task.id} ({task.modality}) has no training samples")
    total = cfg.epochs * n_batches(pools, cfg.batch_size)
    rank, world = dist_info()
    params = [p for g in groups for p in g["params"]]
    dtype = compute_dtype(device, cfg.precision)  # once per task: not a device query at every step
    model.train()
    with frozen_except(model, params), tqdm(total=total, desc=f"task {task.id} {task.modality}",
                                            disable=not cfg.progress or rank > 0, leave=False) as bar:
        for epoch in range(cfg.epochs):
            for batch in iterate_batches(pools, cfg.batch_size, generator, device):
                with autocast(device, dtype):
                    loss, logs = method.loss(model, shard(batch, rank, world), task)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"task {task.id} ({task.modality}), epoch {epoch}: loss is "
                                           f"{loss.item()} ({logs}); lower train.lr or check the features")
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    average_gradients(params, world)
                    method.after_backward(model)
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    average_gradients(params, world)
                    scaler.unscale_(opt)  # methods' after_backward sees true gradients
                    method.after_backward(model)
                    scaler.step(opt)  # skipped when a gradient overflowed
                    scaler.update()
                if log is not None and rank == 0:
                    log({"task": task.id, "epoch": epoch, "loss": loss.item(), **logs,
                         "lr": opt.param_groups[0]["lr"], "wall_time": time.time()})
                bar.update()
                bar.set_postfix(logs, refresh=False)
    model.eval()
