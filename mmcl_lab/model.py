"""The binding model: a small transformer over frozen encoder tokens, projecting into the text space.

It is pretrained once on the pretraining corpus (pretrain.py) and then frozen (prompt methods) or
fine-tuned (the other methods). Prompts are prefix tokens at every layer (deep prompts).
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


N_POOL = 2  # pooled views of the data tokens: a mean and a learned weighting (a ramp at start)


def _pool_init(n_tokens: int) -> Tensor:
    ramp = torch.linspace(-1.0, 1.0, n_tokens) if n_tokens > 1 else torch.zeros(1)
    return torch.stack([torch.full((n_tokens,), 1.0 / n_tokens), ramp / n_tokens], dim=1)  # (T, 2)


def _key(space: str) -> str:
    # ModuleDict keys may not contain "." (feature spaces can be paths), so key by a stable hash.
    return f"space_{zlib.crc32(space.encode()):08x}"


class AlignmentModel(nn.Module):
    """Frozen tokens of any feature space -> L2-normalised embeddings comparable with class-name texts.

    Per feature space (an input adapter): LayerNorm + Linear to width dim, learned token positions, and
    learned pooling weights over token positions (initialised to a mean and a first-to-last ramp, so frame
    order -- the direction of a motion -- survives pooling). Shared: `layers` pre-norm transformer blocks,
    then LayerNorm + Linear from the pooled data tokens into the text anchor space, and a learned
    temperature. Prompts are prefix tokens: layer k attends over [prompts[k]; data tokens] and drops the
    prompt outputs again (deep prompts, as VPT-deep and L2P/COMM on ViTs); methods own them.
    """

    def __init__(self, feature_spaces: dict[str, tuple[int, int]], class_text: Tensor, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = nn.ModuleDict({_key(s): nn.Sequential(nn.LayerNorm(f), nn.Linear(f, cfg.dim))
                                     for s, (_, f) in feature_spaces.items()})
        self.positions = nn.ParameterDict({_key(s): nn.Parameter(0.02 * torch.randn(t, cfg.dim))
                                           for s, (t, _) in feature_spaces.items()})
        self.pooling = nn.ParameterDict({_key(s): nn.Parameter(_pool_init(t)) for s, (t, _) in feature_spaces.items()})
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(cfg.layers)])
        self.out = nn.Sequential(nn.LayerNorm(N_POOL * cfg.dim), nn.Linear(N_POOL * cfg.dim, class_text.shape[1]))
        # log(1 / temperature), learned in pretraining (as CLIP's logit scale) and frozen afterwards.
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)), requires_grad=False)
        self.register_buffer("class_text", class_text.clone())  # (C, E), frozen anchors

    @property
    def temperature(self) -> float:
        """The temperature cosine logits are divided by."""
        return float(1.0 / self.log_scale.detach().exp().clamp(max=100.0))

    def embed(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) tokens [+ prompts (D, L, dim) or (B, D, L, dim) for the first D layers] -> (B, E) unit
        vectors."""
        key = _key(space)
        if key not in self.inputs:
            raise KeyError(f"feature space {space!r} is unknown to this model")
        expected = self.inputs[key][0].normalized_shape[0]
        if x.ndim != 3 or x.shape[-1] != expected or x.shape[1] > len(self.positions[key]):
            raise ValueError(f"features for {space!r} must be (B, <={len(self.positions[key])}, "
                             f"{expected}), got {tuple(x.shape)}")
        h = self.inputs[key](x) + self.positions[key][: x.shape[1]]  # (B, T, dim)
        if prompts is not None:
            prompts = prompts.expand(x.shape[0], -1, -1, -1) if prompts.ndim == 3 else prompts  # (B, D, L, dim)
            if prompts.ndim != 4 or prompts.shape[1] > len(self.blocks) or prompts.shape[-1] != self.cfg.dim:
                raise ValueError(f"prompts must be (B, <={len(self.blocks)}, L, {self.cfg.dim}), "
                                 f"got {tuple(prompts.shape)}")
        depth = 0 if prompts is None else prompts.shape[1]
        for k, block in enumerate(self.blocks):
            if k < depth:  # prefix tokens for this layer: attended to, then dropped
                n_prompt = prompts.shape[2]
                h = block(torch.cat([prompts[:, k], h], dim=1))[:, n_prompt:]  # (B, L + T, dim) -> (B, T, dim)
            else:
                h = block(h)
        weights = self.pooling[key][: x.shape[1]]  # (T, K)
        pooled = torch.einsum("btd,tk->bkd", h, weights).flatten(1)  # (B, K * dim)
        return F.normalize(self.out(pooled), dim=-1)  # (B, E)

    def forward(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """embed(); a forward lets torch.func (per-sample gradients) call the model functionally."""
        return self.embed(x, space, prompts)

    def logits(self, z: Tensor, classes: Tensor | list[int] | None = None) -> Tensor:
        """Cosine similarity to class texts over a temperature: (B, E) -> (B, C)."""
        text = self.class_text if classes is None else self.class_text[classes]
        return z @ text.T * self.log_scale.exp().clamp(max=100.0)  # (B, E) @ (E, C) -> (B, C)

    def load_backbone(self, state: dict[str, Tensor]) -> None:
        """Load pretrained weights (everything but the class texts, which belong to the stream)."""
        state = {k: v for k, v in state.items() if k != "class_text"}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"class_text"}:
            raise ValueError(f"pretrained weights do not fit this model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}; check model.* against the pretraining config")


def build_model(stream, cfg: ModelConfig, pretrained: bool = True) -> AlignmentModel:
    """The binding model for a stream's feature spaces and class texts, from the stream's pretrained
    backbone when it has one (pretrained=False: a random initialisation, the `chance` row)."""
    model = AlignmentModel(stream.feature_spaces, stream.class_text, cfg)
    if pretrained and stream.backbone is not None:
        model.load_backbone(stream.backbone.state)
    return model
