"""Stored Gaussian statistics of embeddings and the re-alignment stage trained on samples from them.

Shared by COMM (per-modality alignment maps, relevance pseudo-features) and SLCA (classifier alignment).
No raw exemplars are kept: only a mean and a (full or diagonal) covariance per key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .utils import TensorDict

COVARIANCES = ("full", "lowrank", "diag")


class GaussianBank(nn.Module):
    """Mean and covariance of vectors per integer key (a class id or a task id), as module buffers. The
    covariance is kept full (a Cholesky factor, E x E), low-rank (the top `rank` principal directions, E x rank,
    plus an isotropic rest) or diagonal (E standard deviations): less memory, coarser pseudo-features."""

    def __init__(self, covariance: str = "full", shrinkage: float = 0.1, rank: int = 8):
        super().__init__()
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
        self.covariance, self.shrinkage, self.rank = covariance, shrinkage, rank
        self.mean = TensorDict(key_type=int)  # key -> (E,)
        self.scale = TensorDict(key_type=int)  # Cholesky factor (full), principal factor (lowrank) or stds (diag)
        self.rest = TensorDict(key_type=int)  # lowrank: the isotropic standard deviation outside the factor, (1,)

    def add(self, key: int, z: Tensor) -> None:
        """Fit the Gaussian of key to z (N, E), replacing any earlier fit."""
        z = z.detach().double()
        mean = z.mean(0)
        centred = z - mean
        cov = centred.T @ centred / max(len(z) - 1, 1)  # (E, E)
        # Shrink toward a scaled identity: few samples per class give a singular covariance.
        target = torch.eye(len(mean), dtype=cov.dtype, device=cov.device) * cov.diagonal().mean().clamp_min(1e-8)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * target
        self.mean[key] = mean.float()
        # Every factor is stored contiguous: LAPACK hands back column-major ones, and a checkpoint restores them
        # row-major, so a resumed run would otherwise multiply with another kernel and differ in the last bits.
        if self.covariance == "full":
            self.scale[key] = torch.linalg.cholesky(cov).float().contiguous()
        elif self.covariance == "diag":
            self.scale[key] = cov.diagonal().sqrt().float()
        else:
            values, vectors = torch.linalg.eigh(cov)  # ascending
            k = min(self.rank, len(mean) - 1)
            rest = values[:-k].mean()  # the variance left outside the top-k directions, spread evenly
            factor = vectors[:, -k:] * (values[-k:] - rest).clamp_min(0).sqrt()  # (E, k)
            self.scale[key] = factor.float().contiguous()
            self.rest[key] = rest.clamp_min(0).sqrt().reshape(1).float()

    def sample(self, key: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws (n, E) from the Gaussian of key."""
        mean, scale = self.mean[key], self.scale[key]
        eps = torch.randn(n, len(mean), generator=generator).to(mean.device)
        if self.covariance == "full":
            return mean + eps @ scale.T
        if self.covariance == "diag":
            return mean + eps * scale
        low = torch.randn(n, scale.shape[1], generator=generator).to(mean.device)
        return mean + low @ scale.T + eps * self.rest[key]

    def keys(self) -> list[int]:
        """The keys with a fitted Gaussian, sorted."""
        return sorted(self.mean.keys())


def identity_map(dim: int) -> nn.Linear:
    """A linear map E -> E initialised to the identity (re-alignment starts from 'no change')."""
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


def train_alignment(align: nn.Module, class_text: Tensor, classes: list[int], samples: Tensor, labels: Tensor,
                    temperature: float, epochs: int, lr: float, generator: torch.Generator,
                    batch_size: int = 128) -> float:
    """Fit align so that normalize(align(z)) classifies samples among classes; returns the last loss."""
    opt = torch.optim.Adam(align.parameters(), lr=lr)
    text = class_text[classes]  # (C, E)
    target = torch.searchsorted(torch.tensor(classes, device=labels.device), labels)
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            z = F.normalize(align(samples[idx]), dim=-1)
            loss = F.cross_entropy(z @ text.T / temperature, target[idx])  # (B, E) @ (E, C)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return loss.item()
