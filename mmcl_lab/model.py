"""The trainable part: a small transformer head mapping frozen tokens (+ prompt tokens) to the text space."""

from __future__ import annotations

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

    Per feature space: LayerNorm + Linear to width dim, learned token positions, and learned pooling
    weights over token positions (initialised to a mean and a first-to-last ramp, so frame order -- the
    direction of a motion -- survives pooling). Shared: transformer layer(s) over [prompt tokens; data
    tokens], then LayerNorm + Linear from the pooled data tokens into the text anchor space. Prompts
    enter as extra tokens the data tokens attend to; they are owned by the methods that use them.
    """

    def __init__(self, feature_spaces: dict[str, tuple[int, int]], class_text: Tensor, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = nn.ModuleDict({_key(s): nn.Sequential(nn.LayerNorm(f), nn.Linear(f, cfg.dim))
                                     for s, (_, f) in feature_spaces.items()})
        self.positions = nn.ParameterDict({_key(s): nn.Parameter(0.02 * torch.randn(t, cfg.dim))
                                           for s, (t, _) in feature_spaces.items()})
        self.pooling = nn.ParameterDict({_key(s): nn.Parameter(_pool_init(t)) for s, (t, _) in feature_spaces.items()})
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(N_POOL * cfg.dim), nn.Linear(N_POOL * cfg.dim, class_text.shape[1]))
        self.register_buffer("class_text", class_text.clone())  # (C, E), frozen anchors

    def embed(self, x: Tensor, space: str, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) tokens [+ (B, L, dim) or (L, dim) prompts] -> (B, E) unit vectors."""
        key = _key(space)
        if key not in self.inputs:
            raise KeyError(f"feature space {space!r} is unknown to this model")
        expected = self.inputs[key][0].normalized_shape[0]
        if x.ndim != 3 or x.shape[-1] != expected or x.shape[1] > len(self.positions[key]):
            raise ValueError(f"features for {space!r} must be (B, <={len(self.positions[key])}, "
                             f"{expected}), got {tuple(x.shape)}")
        h = self.inputs[key](x) + self.positions[key][: x.shape[1]]  # (B, T, dim)
        n_prompt = 0
        if prompts is not None:
            prompts = prompts.expand(x.shape[0], -1, -1) if prompts.ndim == 2 else prompts
            n_prompt = prompts.shape[1]
            h = torch.cat([prompts, h], dim=1)  # (B, L + T, dim)
        h = self.blocks(h)[:, n_prompt:]  # outputs at the data tokens, (B, T, dim)
        weights = self.pooling[key][: x.shape[1]]  # (T, K)
        pooled = torch.einsum("btd,tk->bkd", h, weights).flatten(1)  # (B, K * dim)
        return F.normalize(self.out(pooled), dim=-1)  # (B, E)

    def logits(self, z: Tensor, classes: Tensor | list[int] | None = None) -> Tensor:
        """Cosine similarity to class texts over a temperature: (B, E) -> (B, C)."""
        text = self.class_text if classes is None else self.class_text[classes]
        return z @ text.T / self.cfg.temperature  # (B, E) @ (E, C) -> (B, C)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by all modalities (the transformer and the output projection)."""
        return [*self.blocks.parameters(), *self.out.parameters()]

    def space_parameters(self, space: str) -> list[nn.Parameter]:
        """Parameters of one feature space's input projection."""
        key = _key(space)
        return [*self.inputs[key].parameters(), self.positions[key], self.pooling[key]]


def build_model(stream, cfg: ModelConfig) -> AlignmentModel:
    """The head for a stream's feature spaces and class texts."""
    return AlignmentModel(stream.feature_spaces, stream.class_text, cfg)
