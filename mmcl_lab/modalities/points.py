"""Point clouds: (N, P, 3) float32 xyz coordinates, centred. The fifth modality, in this one file: its layout and
file reader, its bundled generators (surface samples of trimesh shapes, for the stream and for the pretraining
corpus) and its two encoders.

As PointCLIP (Zhang et al., CVPR 2022) feeds point clouds to CLIP's image tower, the encoders project a cloud
onto three orthographic depth views (along x, y and z) and run each view through an image network: the frozen
EfficientNet-Lite0 (4 tokens per view) or the tiny random one (for tests). Depth maps and point clouds are then
told apart by their feature space, as every modality is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.base import RawData, register_dataset
from ..data.corpus import CORPUS_STREAM, EXTRA_SHAPES
from ..data.shapes import SHAPES, _mesh
from ..encoders.base import as_float_tensor, register_encoder
from ..encoders.efficientnet import EfficientNetEncoder
from ..encoders.tiny import TinyEncoder
from .base import Modality, register_modality

N_POINTS = 512  # points per cloud: folder clouds are resampled to it
STREAM_SHAPES = EXTRA_SHAPES[:8]  # names the depth stream does not use: class names are unique across a stream


def read_points(path: Path) -> np.ndarray:
    """One cloud as (N_POINTS, 3) float32: a (P, 3) .npy array (never unpickled), or a mesh or point file that
    trimesh reads (.ply, .obj, .off, .stl; meshes are sampled on their surface with a fixed seed)."""
    if path.suffix.lower() == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        import trimesh
        shape = trimesh.load(str(path))
        points = (shape.vertices if isinstance(shape, trimesh.PointCloud)
                  else trimesh.sample.sample_surface(shape, N_POINTS, seed=0)[0])
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or not len(points) or points.dtype.kind not in "fiu":
        raise ValueError(f"expected a non-empty (P, 3) array of coordinates, got {points.dtype} {points.shape}")
    picks = np.linspace(0, len(points) - 1, N_POINTS).round().astype(int)  # evenly over the file's order
    points = points[picks].astype(np.float32)
    return points - points.mean(0)


POINTS = register_modality(Modality(
    "points", ndim=3, layout="(N, P, 3) float32 xyz, centred", data="point_clouds",
    encoder="points/efficientnet_lite0", template="a point cloud of a {}", corpus="corpus_point_clouds",
    extensions=(".npy", ".ply", ".obj", ".off", ".stl"), read=read_points, colour="#B279A2", marker="pentagon"))


# ---- the bundled data ---------------------------------------------------------------------------------------


def sample_clouds(names: tuple[str, ...], n_per_class: int, rng: np.random.Generator, noise: float = 0.01,
                  stretch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, N_POINTS, 3) surface samples of each shape under a random rotation and scale, stretched along a
    random axis by up to `stretch`, with Gaussian jitter; and their labels."""
    import trimesh
    from scipy.spatial.transform import Rotation

    labels = np.repeat(np.arange(len(names)), n_per_class)
    clouds = np.zeros((len(labels), N_POINTS, 3), dtype=np.float32)
    meshes = {name: _mesh(name) for name in names}
    for i, label in enumerate(labels):
        points = trimesh.sample.sample_surface(meshes[names[label]], N_POINTS, seed=int(rng.integers(2**31)))[0]
        scale = rng.uniform(0.8, 1.2) * (1 + rng.uniform(0, stretch) * np.eye(3)[rng.integers(3)])  # (3,)
        points = Rotation.random(random_state=int(rng.integers(2**31))).apply(points * scale)
        points = points + rng.normal(0, noise, points.shape)
        clouds[i] = points - points.mean(0)
    return clouds, labels


@register_dataset("point_clouds", "points")
def point_clouds(n_per_class: int, seed: int) -> RawData:
    """Eight shapes sampled as point clouds under random rotation, scale and jitter."""
    rng = np.random.default_rng(seed)
    clouds, labels = sample_clouds(STREAM_SHAPES, n_per_class, rng)
    order = rng.permutation(len(labels))
    return RawData("point_clouds", "points", clouds[order], labels[order], STREAM_SHAPES)


@register_dataset("corpus_point_clouds", "points")
def corpus_point_clouds(n_per_class: int, seed: int, shift: float = 1.0) -> RawData:
    """The stream's 8 shapes and 10 more, on samples of their own, with jitter and stretch moved away from the
    stream's by shift."""
    rng = np.random.default_rng([seed, CORPUS_STREAM])
    names = STREAM_SHAPES + tuple(s for s in (*SHAPES, *EXTRA_SHAPES) if s not in STREAM_SHAPES)
    clouds, labels = sample_clouds(names, n_per_class, rng, noise=0.01 * (1 + 2 * shift), stretch=0.3 * shift)
    order = rng.permutation(len(labels))
    return RawData("corpus_point_clouds", "points", clouds[order], labels[order], names)


# ---- encoders: three orthographic depth views through an image tower ----------------------------------------


def depth_views(points: Tensor, size: int) -> Tensor:
    """(B, P, 3) clouds -> (B, 3, size, size) depth views along x, y and z, in [0, 1]: the nearest point per
    pixel is bright (0.2 far .. 1 near), empty pixels are 0. Each cloud is scaled into the unit cube first."""
    b = points.shape[0]
    unit = points / points.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)  # (B, P, 3) in [-1, 1]
    views = []
    for axis in range(3):
        u, v = [k for k in range(3) if k != axis]
        col = ((unit[..., u] + 1) / 2 * (size - 1)).round().long()  # (B, P)
        row = ((1 - unit[..., v]) / 2 * (size - 1)).round().long()
        near = 0.2 + 0.8 * (unit[..., axis] + 1) / 2  # seen from +axis
        view = torch.zeros(b, size * size).scatter_reduce(1, row * size + col, near, reduce="amax")
        views.append(view.view(b, size, size))
    return torch.stack(views, 1)


@register_encoder("points/efficientnet_lite0")
class PointsEfficientNet(EfficientNetEncoder):
    """Three 64 x 64 depth views per cloud through EfficientNet-Lite0: 4 spatial tokens per view."""

    modality = "points"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:  # (B, P, 3) -> (B, 3, 3, 64, 64)
        views = depth_views(as_float_tensor(x), 64)  # (B, 3 views, 64, 64) in [0, 1]
        return (views[:, :, None].expand(-1, -1, 3, -1, -1) - 0.5) / 0.5  # grey to 3 channels in [-1, 1]

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 3, 64, 64) -> (B, 12, 1280)
        return super().forward(x.flatten(0, 1)).reshape(x.shape[0], -1, self.dim)


@register_encoder("points/tiny")
class TinyPointsEncoder(TinyEncoder):
    """Tiny random encoder on three 32 x 32 depth views: 4 spatial tokens per view."""

    modality = "points"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:  # (B, P, 3) -> (B, 3, 1, 32, 32)
        views = depth_views(as_float_tensor(x), 32)
        std = views.std((2, 3), keepdim=True).clamp_min(1e-6)  # standardised per view, as the other tiny encoders
        return ((views - views.mean((2, 3), keepdim=True)) / std)[:, :, None]

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 1, 32, 32) -> (B, 12, F)
        return super().forward(x.flatten(0, 1)).reshape(x.shape[0], -1, self.dim)
