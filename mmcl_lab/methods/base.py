"""The method contract: what a continual-learning method adds to the loss and does between tasks.

A method is an nn.Module: what it keeps across tasks (memories, statistics, maps, prompts) is its module state,
which the run directory saves and restores through state_dict. Working copies that it rebuilds when it needs
them (a teacher snapshot) are kept apart with keep_unsaved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batches import Batch, in_chunks
from ..config import MethodConfig, TrainConfig, method_settings
from ..registry import METHODS
from ..streams import Task, TaskStream

if TYPE_CHECKING:
    from ..backbones import Backbone, EmbeddingModel

register_method = METHODS.register


class Context:
    """What a method may know: the scenario's modalities, the device, the pretrained backbone, one seeded
    source of randomness, and the tasks revealed so far -- the finished ones and the current one. The
    runner reveals each task as it begins; future tasks are not reachable from here."""

    def __init__(self, modalities: tuple[str, ...], device: torch.device, seed: int,
                 backbone: Backbone | None = None, batch_size: int = 1024):
        self.modalities = tuple(modalities)  # declared by the scenario (config), not read off the tasks
        self.device = torch.device(device)
        self.seed = seed
        self.backbone = backbone
        self.batch_size = batch_size  # samples per chunk of a heavy pass over a whole set (train.eval_batch_size)
        # each training step's losses go here (the run sets its trainlog.TrainLog); None: not logged
        self.log: Callable[[dict], None] | None = None
        # the run's loss scaler when it trains in float16 (its state is checkpointed); None otherwise
        self.scaler: torch.amp.GradScaler | None = None
        self._tasks: list[Task] = []

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The finished tasks and the current one, in order (task ids 0..current)."""
        return tuple(self._tasks)

    @property
    def task(self) -> Task:
        """The current task."""
        if not self._tasks:
            raise LookupError("no task has begun yet")
        return self._tasks[-1]

    def reveal(self, task: Task) -> None:
        """The runner's call as task begins; tasks come in order, once each."""
        if task.id != len(self._tasks):
            raise ValueError(f"task {task.id} revealed after {len(self._tasks)} tasks; tasks come in order")
        self._tasks.append(task)

    def seen_classes(self, upto: int | None = None, modality: str | None = None) -> list[int]:
        """Class ids of tasks 0..upto (default: up to the current one), optionally of one modality."""
        upto = len(self._tasks) - 1 if upto is None else upto
        return [c for t in self._tasks[:upto + 1] if modality in (None, t.modality) for c in t.classes]

    def rng(self, purpose: str) -> torch.Generator:
        """A CPU generator seeded by (run seed, purpose, current task): every random choice a method makes
        (memory selection, pseudo-features, initialisation, batch order) draws from one of these, so the run
        seed varies all of them and resuming after a task reproduces them."""
        digest = hashlib.sha256(f"{self.seed}|{purpose}|{len(self._tasks) - 1}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    @classmethod
    def replay(cls, stream: TaskStream, upto: int = -1, device: torch.device | str = "cpu", seed: int = 0,
               backbone: Backbone | None = None) -> "Context":
        """A context for a stream with tasks 0..upto revealed (for notebooks and tests that drive the hooks)."""
        ctx = cls(tuple(stream.modalities), torch.device(device), seed, backbone)
        for task in stream.tasks[:upto + 1]:
            ctx.reveal(task)
        return ctx


@dataclass(frozen=True)
class NoConfig:
    """A method without hyper-parameters."""


class Method(nn.Module):
    """Base class: plain fine-tuning with cross-entropy over the current task's classes.

    Hooks, in the order the runner calls them for every task: before_task, then (inside the one training
    loop in train.py) loss and after_backward for each batch, then after_task. embed() is what evaluation
    and the probes call: modality=None means the modality identity is not available at test time. Every
    tensor a method keeps across tasks is a parameter, a buffer or a submodule (utils.TensorDict for state that
    grows), and every device it needs is its context's.
    """

    Config: type = NoConfig
    needs_modality_id = False  # refuse scenarios that hide the modality at test time
    # an override of embed() reads its modality argument unless it says otherwise (see reads_modality)
    uses_modality_hint = True
    uses_memory = False  # stores features of past tasks (reported with the memory size)
    trains = True  # False: the model is never updated (zero-shot)
    pretrained = True  # start from the stream's pretrained backbone (False: a random initialisation)

    def __init__(self, cfg: Any = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else self.Config()
        self.ctx: Context | None = None
        self._per_sample: dict[tuple[str, int, int], Tensor] = {}  # fixed_per_sample's values, for one fit

    def setup(self, model: EmbeddingModel, context: Context) -> None:
        """Called once with the model and the method's context (no task revealed yet) before any task."""
        self.ctx = context

    def keep_unsaved(self, name: str, module: nn.Module | None) -> None:
        """Hold a working copy (a frozen snapshot of a model) that the method rebuilds when it needs it: not
        module state, so it is neither saved in checkpoints nor counted by memory_bytes unless the method adds it."""
        object.__setattr__(self, name, module)

    def trainable_parameters(self, model: EmbeddingModel, task: Task) -> list:
        """What the optimiser updates during task: parameters, or param groups with an 'lr_scale'."""
        return list(model.parameters())

    def training_batches(self, task: Task) -> list[Batch]:
        """The pools the loop draws mini-batches from (one per feature space and modality)."""
        return [Batch(task.train_x, task.train_y, task.feature_space, task.modality)]

    def before_task(self, model: EmbeddingModel, task: Task) -> None:
        """Prepare for task (snapshots, new prompts, statistics of old tasks)."""

    def loss(self, model: EmbeddingModel, batch: Batch, task: Task) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy over task's classes; methods add their terms to this."""
        z = self.embed(model, batch.x, batch.space, batch.modality, aligned=False)
        ce = cross_entropy(model, z, batch.y, list(task.classes))
        return ce, {"ce": ce.item()}

    def after_backward(self, model: EmbeddingModel) -> None:
        """Runs between backward and the optimiser step (e.g. to project gradients)."""

    def after_task(self, model: EmbeddingModel, task: Task) -> None:
        """Consolidate after task (statistics, Fisher information, memories, re-alignment)."""

    def embed(self, model: EmbeddingModel, x: Tensor, space: str, modality: str | None,
              aligned: bool = True) -> Tensor:
        """Embeddings (B, E) for the loss, evaluation and probes (aligned=False skips any re-alignment)."""
        return model.embed(x, space)

    @property
    def reads_modality(self) -> bool:
        """Whether embed() depends on its modality argument: evaluation and probes embed once per setting (given,
        hidden) when it does, once for both when it does not. The base embed does not; an override is taken to,
        unless its class sets uses_modality_hint = False."""
        return type(self).embed is not Method.embed and self.uses_modality_hint

    def embed_all(self, model: EmbeddingModel, x: Tensor, space: str, modality: str | None,
                  aligned: bool = True) -> Tensor:
        """self.embed over a whole set x (N, T, F), ctx.batch_size samples at a time, on ctx.device: (N, E)."""
        return in_chunks(lambda b: self.embed(model, b, space, modality, aligned), x, self.ctx.batch_size,
                         self.ctx.device)

    def model_embed_all(self, model: EmbeddingModel, x: Tensor, space: str) -> Tensor:
        """model.embed itself (no prompts, no maps) over a whole set x, ctx.batch_size samples at a time: (N, E)."""
        return in_chunks(lambda b: model.embed(b, space), x, self.ctx.batch_size, self.ctx.device)

    def fit_task(self, model: EmbeddingModel, task: Task, train: TrainConfig) -> None:
        """The one escape hatch: by default the shared loop of train.py."""
        from ..train import train_task
        self._per_sample.clear()
        try:
            train_task(model, self, task, train, self.ctx.rng("batch order"), self.ctx.device, self.ctx.log,
                       self.ctx.scaler)
        finally:
            self._per_sample.clear()

    def fixed_per_sample(self, name: str, batch: Batch, task: Task, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """fn(batch.x), for a value of each sample that cannot change while the task trains (the prompt-free
        embedding of a frozen backbone): fn runs once over the batch's whole pool, without gradients and in the
        model's current mode (train and eval mode take different kernels), and each step reads its rows by
        batch.index. On the 2-core CPU of docs/BENCHMARKS.md a row's bits do not depend on the batch it is in, and
        every method's seed-0 run is byte-equal with and without this cache; kernels elsewhere may differ in the
        last bits, still deterministically. A batch without an index (not drawn by the loop) is computed directly."""
        with torch.no_grad():
            if batch.index is None:
                return fn(batch.x)
            key = (name, task.id, batch.pool)
            if key not in self._per_sample:
                pool = self.training_batches(task)[batch.pool]
                self._per_sample[key] = in_chunks(fn, pool.x, self.ctx.batch_size, self.ctx.device)  # (N, ...)
            values = self._per_sample[key]
            return values[batch.index.to(values.device)]

    def memory_bytes(self) -> int:
        """Bytes of stored features, statistics and snapshots kept across tasks: its module state."""
        return sum(v.numel() * v.element_size() for v in self.state_dict().values())


def cross_entropy(model: EmbeddingModel, z: Tensor, y: Tensor, classes: list[int]) -> Tensor:
    """Cross-entropy of embeddings z against the texts of classes; y holds global class ids."""
    lookup = torch.full((len(model.class_text),), -1, dtype=torch.long, device=y.device)
    lookup[torch.tensor(classes, device=y.device)] = torch.arange(len(classes), device=y.device)
    target = lookup[y]
    if (target < 0).any():
        raise ValueError(f"labels {sorted(set(y[target < 0].tolist()))} are outside the classes {classes}")
    return F.cross_entropy(model.logits(z, classes), target)


def create_method(cfg: MethodConfig) -> Method:
    """Instantiate a registered method with its params checked against the method's Config dataclass."""
    return METHODS.get(cfg.name)(method_settings(cfg))


def check_assumptions(method: Method, stream: TaskStream) -> None:
    """Refuse a method that needs information the scenario does not give."""
    if method.needs_modality_id and not stream.modality_id_at_test:
        raise ValueError(f"{type(method).__name__} needs the modality identity at test time, but the "
                         "scenario hides it (stream.modality_id_at_test=False)")
