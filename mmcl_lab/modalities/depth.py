"""Depth maps: (N, H, W) float32 metres, 0 = no return. Bundled: 3D shapes ray-cast with trimesh; folders of
2-D .npy arrays, read in their own size and brought to each encoder's resolution by `conform_depth`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Modality, register_modality

def read_depth(path: Path) -> np.ndarray:
    """One .npy depth map as (H, W) float32 metres; NaN and inf become 0 (no return). Never unpickled."""
    depth = np.load(path, allow_pickle=False)  # a pickled .npy is refused, never executed
    if isinstance(depth, np.lib.npyio.NpzFile):
        depth.close()
        raise ValueError("an .npz archive, not a .npy array: save the depth map with np.save")
    if depth.ndim != 2 or depth.dtype.kind not in "fiu":
        raise ValueError(f"expected a 2-D numeric depth map, got {depth.dtype} {depth.shape}")
    return valid_depth(depth)


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """A depth map as float32 metres with NaN and inf (invalid readings) as 0, no return."""
    return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def conform_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """One decoded depth map -> (size, size) float32, nearest-neighbour (blending would invent depths at edges)."""
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(depth))[None, None]
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy()


DEPTH = register_modality(Modality(
    "depth", ndim=3, layout="(N, H, W) float32 metres, 0 = no return", data="shapes",
    encoder="depth/efficientnet_lite0", template="a depth map of a {}", corpus="corpus_shapes",
    extensions=(".npy",), read=read_depth, colour="#54A24B", marker="square", conform=conform_depth))
