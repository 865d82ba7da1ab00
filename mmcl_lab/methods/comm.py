"""COMM: Continual Learning for Multiple Modalities (Jin & Kim, arXiv 2503.08064), as read in COMM.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..gaussians import GaussianBank, identity_map, train_alignment
from ..utils import TensorDict
from .base import Method, cross_entropy, register_method
from .lwf import distill


@dataclass(frozen=True)
class COMMConfig:
    """Every field marked 'inferred' is a reading of the paper (COMM.md), not a documented fact."""

    prompt_length: int = 4  # tokens per layer in each task's prompt P_t
    prompt_depth: int = 4  # layers that get prefix tokens (deep prompts); 0 = no prompts (re-alignment only)
    # False: the prompts stay at their zero start. Zero prefix tokens are not a no-op (attention still attends to
    # them), so this ablation tells the shift that their mere presence causes from what training them adds.
    train_prompts: bool = True
    self_reg: str = "l2"  # inferred 3: l2 (embedding shift) | kl (logit distributions) | off
    lambda_sr: float = 1.0
    relevance: str = "learned"  # inferred 4: learned R_t | off (own prompts; uniform blend when hidden) | oracle
    # (own prompts; routed by the true modality, read off the input's encoder, when hidden)
    relevance_training: str = "before"  # inferred 4: before the task on pseudo-features | joint
    lambda_r: float = 1.0  # weight of the relevance loss when relevance_training=joint
    relevance_epochs: int = 30
    realign: str = "modality"  # inferred 5: one map A_m per modality | shared (one map) | off
    covariance: str = "full"  # inferred 5: full | lowrank | diag, per class (memory: E^2, E*rank, E floats)
    covariance_rank: int = 8  # directions kept by covariance=lowrank
    stat_classes_per_task: int = 0  # keep statistics of only the first k classes of each task (0 = all)
    align_samples: int = 128  # pseudo-features per class in the re-alignment stage
    align_epochs: int = 5
    align_lr: float = 1e-3

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"comm {name}={getattr(self, name)!r}; choose from {', '.join(allowed)}")


CHOICES = {"self_reg": ("l2", "kl", "off"), "relevance": ("learned", "off", "oracle"),
           "relevance_training": ("before", "joint"), "realign": ("modality", "shared", "off")}


@register_method("comm")
class COMM(Method):
    """Per-task deep prompts on the frozen pretrained backbone, aggregated within a modality and held in
    place by self-regularisation; a relevance classifier R_t on the frozen prompt-free embedding (which
    never moves, so R_t cannot go stale) blends the prompts of related modalities; per-class Gaussians of
    old embeddings re-align each modality's embeddings (A_m) after every task. No raw exemplars are stored."""

    Config = COMMConfig

    def setup(self, model, context):
        super().setup(model, context)
        self.dim, e = model.prompt_width, model.class_text.shape[1]
        self.depth = min(self.cfg.prompt_depth, model.prompt_layers)
        self.mods = list(context.modalities)
        self.prompts = TensorDict(trainable=True, key_type=int)  # task id -> P_t (D, L, dim)
        self.alpha = TensorDict(trainable=True)  # modality -> weights over its earlier tasks' prompts
        self.relevance = nn.Linear(e, len(self.mods)).to(context.device)  # R_t on prompt-free embeddings
        n_maps = len(self.mods) if self.cfg.realign == "modality" else 1
        self.align = nn.ModuleList([identity_map(e) for _ in range(n_maps)]).to(context.device)
        self.class_stats = GaussianBank(self.cfg.covariance, rank=self.cfg.covariance_rank)  # per class, of z
        self.query_stats = GaussianBank(self.cfg.covariance, rank=self.cfg.covariance_rank)  # per task, of q(x)

    @property
    def seen(self) -> list[str]:
        """The modality of each finished task, in order: the tasks whose query statistics are kept."""
        return [self.ctx.tasks[t].modality for t in self.query_stats.keys()]

    # ---- prompts ---------------------------------------------------------------------------------------
    def _tasks_of(self, modality: str) -> list[int]:
        return [t for t in sorted(self.prompts.keys()) if self.ctx.tasks[t].modality == modality]

    def aggregate(self, modality: str) -> Tensor:
        """Pbar_m = P_latest + sum_j softmax(alpha_m)_j * stopgrad(P_j) over earlier tasks of modality."""
        keys = self._tasks_of(modality)
        if not keys:
            return torch.zeros(self.depth, self.cfg.prompt_length, self.dim, device=self.ctx.device)
        latest, earlier = self.prompts[keys[-1]], keys[:-1]
        if not earlier:
            return latest
        weights = self.alpha[modality].softmax(0)
        return latest + sum(w * self.prompts[k].detach() for w, k in zip(weights, earlier))

    def relevance_weights(self, model, x: Tensor, space: str, modality: str | None, routed: bool = False) -> Tensor:
        """r(x): (B, M) weights over modalities. One-hot on the given modality at test time, and always when
        relevance is off or oracle (the oracle reads a hidden modality off the input's encoder); otherwise
        softmax(R_t(q(x))) over seen modalities; uniform over seen modalities when nothing can be learned yet,
        or relevance is off and the modality is hidden. routed=True (the training loss, inferred 4): learned
        relevance routes the prompts even when the modality is given."""
        if self.cfg.relevance == "oracle" and modality is None:  # the encoder tells the modality here
            modality = next((t.modality for t in self.ctx.tasks if t.feature_space == space), None)
        seen = [m for m in self.mods if m in self.seen or m == modality] or self.mods  # nothing yet: all
        if modality is not None and (self.cfg.relevance != "learned" or not routed):
            r = torch.zeros(len(self.mods), device=x.device)
            r[self.mods.index(modality)] = 1.0
            return r.expand(len(x), -1)
        mask = torch.tensor([m in seen for m in self.mods], device=x.device)
        if self.cfg.relevance != "learned" or len(seen) == 1:
            return (mask.float() / mask.sum()).expand(len(x), -1)
        with torch.no_grad():
            q = model.embed(x, space)  # the prompt-free embedding
            return self.relevance(q).masked_fill(~mask, float("-inf")).softmax(-1)

    def prompt(self, r: Tensor, replace: dict[str, Tensor] | None = None) -> Tensor | None:
        """sum_m r_m Pbar_m: (B, M) -> (B, D, L, dim), None without prompts; `replace` swaps in fixed
        aggregates (the SR target)."""
        if self.depth == 0:
            return None
        replace = replace or {}
        bars = torch.stack([replace[m] if m in replace else self.aggregate(m) for m in self.mods])  # (M, D, L, dim)
        return torch.einsum("bm,mkld->bkld", r, bars)

    def embed(self, model, x, space, modality, aligned=True):
        r = self.relevance_weights(model, x, space, modality)
        z = model.embed(x, space, self.prompt(r))
        if not aligned or self.cfg.realign == "off" or not self.seen:
            return z
        if self.cfg.realign == "shared":
            return F.normalize(self.align[0](z), dim=-1)
        maps = torch.stack([F.normalize(a(z), dim=-1) for a in self.align], 1)  # (B, M, E)
        return F.normalize((r.unsqueeze(-1) * maps).sum(1), dim=-1)  # one-hot r picks A_m

    # ---- hooks -----------------------------------------------------------------------------------------
    def before_task(self, model, task):
        earlier = self._tasks_of(task.modality)
        self.sr_target = self.aggregate(task.modality).detach() if earlier else None
        self.prompts[task.id] = torch.zeros(self.depth, self.cfg.prompt_length, self.dim, device=self.ctx.device)
        if earlier:
            self.alpha[task.modality] = torch.zeros(len(earlier), device=self.ctx.device)
        self.joint_rng = self.ctx.rng("relevance pseudo-features (joint)")
        if self.cfg.relevance == "learned" and self.cfg.relevance_training == "before" and self.seen:
            self._train_relevance(model, task)

    def trainable_parameters(self, model, task):
        """Only the prompt side learns; the pretrained backbone stays frozen."""
        params = [self.prompts[task.id]] if self.depth and self.cfg.train_prompts else []
        if self.depth and self.cfg.train_prompts and task.modality in self.alpha:
            params.append(self.alpha[task.modality])
        if self.cfg.relevance_training == "joint":
            params += list(self.relevance.parameters())
        return params

    def loss(self, model, batch, task):
        def route(x):  # r(x): the learned relevance routes the prompts even when the modality is given
            return self.relevance_weights(model, x, batch.space, batch.modality, routed=True)

        def target(x, r):  # the SR target: the embedding under this modality's prompts as they were before the task
            return model.embed(x, batch.space, self.prompt(r, {task.modality: self.sr_target}))

        self_reg = self.sr_target is not None and self.cfg.self_reg != "off" and self.depth > 0
        old = None
        if self.cfg.relevance_training == "joint":  # R_t trains with the prompts, so r(x) moves at every step
            r = route(batch.x)  # (B, M)
            if self_reg:
                with torch.no_grad():
                    old = target(batch.x, r)  # (B, E)
        else:  # the backbone, R_t, the SR target and the other modalities' prompts stay fixed during the task
            r = self.fixed_per_sample("relevance", batch, task, route)
            if self_reg:
                old = self.fixed_per_sample("sr target", batch, task, lambda x: target(x, route(x)))
        z = model.embed(batch.x, batch.space, self.prompt(r))
        loss = cross_entropy(model, z, batch.y, list(task.classes))
        logs = {"ce": loss.item()}
        if old is not None:
            if self.cfg.self_reg == "l2":
                sr = ((z - old) ** 2).sum(-1).mean()
            else:
                classes = self.ctx.seen_classes(task.id, task.modality)
                sr = distill(model.logits(z, classes), model.logits(old, classes), 1.0)
            loss = loss + self.cfg.lambda_sr * sr
            logs["sr"] = sr.item()
        if self.cfg.relevance == "learned" and self.cfg.relevance_training == "joint":
            q = self.fixed_per_sample("query", batch, task, lambda x: model.embed(x, batch.space))  # (B, E)
            lr_loss = self._relevance_loss(q, task, self.joint_rng)
            loss = loss + self.cfg.lambda_r * lr_loss
            logs["relevance"] = lr_loss.item()
        return loss, logs

    def _relevance_loss(self, q: Tensor, task, generator: torch.Generator) -> Tensor:
        """Cross-entropy of R_t on the current task's prompt-free embeddings q (B, E), labelled with its
        modality, plus as many Gaussian pseudo-features of earlier tasks, labelled with theirs."""
        feats, labels = [q], [torch.full((len(q),), self.mods.index(task.modality))]
        old_tasks = self.query_stats.keys()
        for tid in old_tasks:  # Gaussian pseudo-features of every earlier task's prompt-free embedding
            feats.append(self.query_stats.sample(tid, max(1, len(q) // len(old_tasks)), generator))
            labels.append(torch.full((len(feats[-1]),), self.mods.index(self.ctx.tasks[tid].modality)))
        return F.cross_entropy(self.relevance(torch.cat(feats)), torch.cat(labels).to(self.ctx.device))

    def _train_relevance(self, model, task):
        opt = torch.optim.Adam(self.relevance.parameters(), lr=1e-2)
        generator = self.ctx.rng("relevance pseudo-features")
        with torch.no_grad():  # the backbone is frozen: the prompt-free embeddings are computed once
            q = self.model_embed_all(model, task.train_x, task.feature_space)  # (N, E)
        for _ in range(self.cfg.relevance_epochs):
            loss = self._relevance_loss(q, task, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def after_task(self, model, task):
        x, y = task.train_x, task.train_y.to(self.ctx.device)
        with torch.no_grad():
            self.query_stats.add(task.id, self.model_embed_all(model, x, task.feature_space))  # (N, E)
            z = self.embed_all(model, x, task.feature_space, task.modality, aligned=False)  # (N, E)
        for c in task.classes[:self.cfg.stat_classes_per_task or None]:
            self.class_stats.add(c, z[y == c])
        if self.cfg.realign != "off":
            self._realign(model, task, z, y)

    def _realign(self, model, task, z_now, y_now):
        """Fit each alignment map on Gaussian samples of old classes plus the current real embeddings."""
        generator = self.ctx.rng("re-alignment")
        groups = self.mods if self.cfg.realign == "modality" else [None]
        seen_all = self.ctx.seen_classes(task.id)
        for i, modality in enumerate(groups):
            classes = self.ctx.seen_classes(task.id, modality)
            if not classes:
                continue
            old = [c for c in classes if c not in task.classes and c in self.class_stats.mean]
            n = self.cfg.align_samples
            samples = [self.class_stats.sample(c, n, generator) for c in old]
            labels = [torch.full((n,), c, device=self.ctx.device) for c in old]
            if modality in (None, task.modality):
                samples.append(z_now)
                labels.append(y_now)
            train_alignment(self.align[i], model.class_text, seen_all, torch.cat(samples).to(self.ctx.device),
                            torch.cat(labels), model.temperature, self.cfg.align_epochs,
                            self.cfg.align_lr, generator)
