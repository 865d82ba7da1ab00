"""Learning to Prompt: a shared pool of prompts picked by key-query matching."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, cross_entropy, register_method


@dataclass(frozen=True)
class L2PConfig:
    pool_size: int = 10
    prompt_length: int = 4  # tokens per prompt and layer
    prompt_depth: int = 4  # layers that get prefix tokens (deep prompts, as COMM's)
    top_k: int = 2  # prompts chosen per input
    pull: float = 0.5  # weight of the key-query matching term


@register_method("l2p")
class L2P(Method):
    """Wang et al., "Learning to Prompt for Continual Learning", CVPR 2022: the prompt-free embedding of
    the frozen pretrained model queries a pool of (key, prompt) pairs; the top-k prompts are prepended to
    its tokens at the first prompt_depth layers (the paper prepends at the input only; depth is a field so
    that COMM and L2P are compared with prompts of the same shape). The backbone stays frozen. Needs no task
    or modality identity."""

    Config = L2PConfig
    uses_modality_hint = False  # the frozen embedding queries the pool, whatever the modality

    def setup(self, model, context):
        super().setup(model, context)
        dim, e, device = model.prompt_width, model.class_text.shape[1], context.device
        depth = max(1, min(self.cfg.prompt_depth, model.prompt_layers))
        init = context.rng("prompt pool init")
        self.prompts = nn.Parameter(0.02 * torch.randn(self.cfg.pool_size, depth, self.cfg.prompt_length, dim,
                                                       generator=init).to(device))
        self.keys = nn.Parameter(F.normalize(torch.randn(self.cfg.pool_size, e, generator=init), dim=-1).to(device))

    def trainable_parameters(self, model, task):
        return [self.prompts, self.keys]

    def _select(self, query):
        """The top-k prompts for each query (B, E), the prompt-free embedding: (B, D, k * L, dim), and their
        key similarities (B, k)."""
        sim = query @ F.normalize(self.keys, dim=-1).T  # (B, M)
        top = sim.topk(self.cfg.top_k, dim=1).indices  # (B, k)
        # Select by a one-hot product, not by indexing: the gradient of self.prompts[top] is a scatter-add,
        # whose summation order (and so its last bits) varies from run to run on the CPU.
        pick = F.one_hot(top, self.cfg.pool_size).to(self.prompts.dtype)  # (B, k, M)
        prompts = torch.einsum("bkm,mdlc->bdklc", pick, self.prompts).flatten(2, 3)  # (B, D, k * L, dim)
        return prompts, sim.gather(1, top)

    def embed(self, model, x, space, modality, aligned=True):
        with torch.no_grad():
            query = model.embed(x, space)  # (B, E)
        return model.embed(x, space, self._select(query)[0])

    def loss(self, model, batch, task):
        # The backbone is frozen, so each sample's query is computed once per task, not at every step.
        query = self.fixed_per_sample("query", batch, task, lambda x: model.embed(x, batch.space))  # (B, E)
        prompts, match = self._select(query)
        z = model.embed(batch.x, batch.space, prompts)
        ce = cross_entropy(model, z, batch.y, list(task.classes))
        pull = (1 - match).mean()
        return ce + self.cfg.pull * pull, {"ce": ce.item(), "pull": pull.item()}
