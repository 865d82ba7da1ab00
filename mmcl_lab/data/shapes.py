"""Depth maps of 3D shapes ray-cast with trimesh (embree when embreex is installed)."""

from __future__ import annotations

import numpy as np

from . import RawData, register_dataset

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus", "capsule", "pyramid", "ring")


def _mesh(name: str):
    import trimesh.creation as create
    return {
        "cube": lambda: create.box(extents=(1.2, 1.2, 1.2)),
        "sphere": lambda: create.icosphere(subdivisions=3, radius=0.75),
        "cylinder": lambda: create.cylinder(radius=0.5, height=1.5, sections=32),
        "cone": lambda: create.cone(radius=0.7, height=1.5, sections=32),
        "torus": lambda: create.torus(major_radius=0.6, minor_radius=0.22),
        "capsule": lambda: create.capsule(height=1.0, radius=0.4),
        "pyramid": lambda: create.cone(radius=0.9, height=1.3, sections=4),
        "ring": lambda: create.annulus(r_min=0.45, r_max=0.75, height=0.35),
    }[name]()


def render_depth(mesh, size: int = 48, distance: float = 2.4, fov: float = 0.9) -> np.ndarray:
    """Perspective depth map (metres along each ray, 0 = background) seen from +z."""
    half = np.tan(fov / 2)
    u = np.linspace(-half, half, size)
    cols, rows = np.meshgrid(u, -u)
    dirs = np.stack([cols, rows, -np.ones((size, size))], axis=-1).reshape(-1, 3)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.tile([0.0, 0.0, distance], (len(dirs), 1))
    hits, rays, _ = mesh.ray.intersects_location(origins, dirs, multiple_hits=False)
    depth = np.zeros(size * size, dtype=np.float32)
    depth[rays] = np.linalg.norm(hits - origins[rays], axis=1)
    return depth.reshape(size, size)


@register_dataset("shapes", "depth")
def shapes(n_per_class: int, seed: int, size: int = 48) -> RawData:
    """Eight primitive shapes under random rotation, scale and offset, with sensor noise and dropout."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(SHAPES)), n_per_class)
    maps = np.zeros((len(labels), size, size), dtype=np.float32)
    base = {name: _mesh(name) for name in SHAPES}
    for i, label in enumerate(labels):
        mesh = base[SHAPES[label]].copy()
        transform = np.eye(4)
        transform[:3, :3] = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        transform[:3, :3] *= rng.uniform(0.75, 1.15)
        transform[:3, 3] = [*rng.uniform(-0.25, 0.25, 2), rng.uniform(-0.3, 0.3)]
        mesh.apply_transform(transform)
        depth = render_depth(mesh, size)
        hit = depth > 0
        depth[hit] += rng.normal(0, 0.01, hit.sum()).astype(np.float32)  # sensor noise
        depth[hit & (rng.random((size, size)) < 0.03)] = 0.0  # missing returns
        maps[i] = depth
    order = rng.permutation(len(labels))
    return RawData("shapes", "depth", maps[order], labels[order], SHAPES)
