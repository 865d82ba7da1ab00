"""Depth maps of 3D shapes ray-cast with trimesh (embree when embreex is installed)."""

from __future__ import annotations

import numpy as np

from .base import RawData, register_dataset

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus", "capsule", "pyramid", "ring")


def _mesh(name: str):
    import trimesh
    import trimesh.creation as create

    def joined(*parts):  # several primitives as one mesh (the ray caster sees the nearest surface)
        return trimesh.util.concatenate(parts)

    def moved(mesh, xyz):
        return mesh.apply_translation(xyz)

    return {
        "cube": lambda: create.box(extents=(1.2, 1.2, 1.2)),
        "sphere": lambda: create.icosphere(subdivisions=3, radius=0.75),
        "cylinder": lambda: create.cylinder(radius=0.5, height=1.5, sections=32),
        "cone": lambda: create.cone(radius=0.7, height=1.5, sections=32),
        "torus": lambda: create.torus(major_radius=0.6, minor_radius=0.22),
        "capsule": lambda: create.capsule(height=1.0, radius=0.4),
        "pyramid": lambda: create.cone(radius=0.9, height=1.3, sections=4),
        "ring": lambda: create.annulus(r_min=0.45, r_max=0.75, height=0.35),
        # the pretraining corpus's extra shapes
        "plate": lambda: create.box(extents=(1.5, 1.5, 0.2)),
        "rod": lambda: create.cylinder(radius=0.15, height=1.8, sections=16),
        "disc": lambda: create.cylinder(radius=0.8, height=0.15, sections=32),
        "hexagonal prism": lambda: create.cylinder(radius=0.7, height=1.2, sections=6),
        "triangular prism": lambda: create.cylinder(radius=0.8, height=1.2, sections=3),
        "egg": lambda: create.icosphere(subdivisions=3, radius=0.5).apply_scale((1.0, 1.0, 1.6)),
        "tube": lambda: create.annulus(r_min=0.4, r_max=0.55, height=1.5),
        "dumbbell": lambda: joined(create.cylinder(radius=0.12, height=1.2), moved(create.icosphere(radius=0.35),
                                   (0, 0, 0.7)), moved(create.icosphere(radius=0.35), (0, 0, -0.7))),
        "cross": lambda: joined(create.box(extents=(1.6, 0.4, 0.4)), create.box(extents=(0.4, 1.6, 0.4))),
        "step": lambda: joined(create.box(extents=(1.4, 0.7, 0.5)), moved(create.box(extents=(0.7, 0.7, 0.5)),
                               (0.35, 0.7, 0))),
    }[name]()


def render_depth(mesh, size: int = 48, distance: float = 2.4, fov: float = 0.9, rotation: np.ndarray | None = None,
                 scale: float = 1.0, offset: np.ndarray | None = None) -> np.ndarray:
    """Perspective depth map (metres along each ray, 0 = background) seen from +z, of the mesh posed as
    scale * rotation @ x + offset. The rays are taken into the mesh's own frame instead of moving the mesh, so a
    mesh's ray-casting structure is built once, not once per pose: 3.5x faster. A ray that grazes an edge can round
    the other way than when the mesh was moved (and than on another machine's embree), so a map can differ there."""
    rotation = np.eye(3) if rotation is None else rotation
    offset = np.zeros(3) if offset is None else np.asarray(offset, dtype=float)
    half = np.tan(fov / 2)
    u = np.linspace(-half, half, size)
    cols, rows = np.meshgrid(u, -u)
    dirs = np.stack([cols, rows, -np.ones((size, size))], axis=-1).reshape(-1, 3)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = np.array([0.0, 0.0, distance])
    local_origins = np.tile(rotation.T @ (origin - offset) / scale, (len(dirs), 1))  # (size^2, 3) in the mesh frame
    hits, rays, _ = mesh.ray.intersects_location(local_origins, dirs @ rotation / scale, multiple_hits=False)
    depth = np.zeros(size * size, dtype=np.float32)
    depth[rays] = np.linalg.norm(scale * hits @ rotation.T + offset - origin, axis=1)  # back in the camera's frame
    return depth.reshape(size, size)


def render_shapes(names: tuple[str, ...], n_per_class: int, rng: np.random.Generator, size: int = 48,
                  distance: tuple[float, float] = (2.4, 2.4), noise: float = 0.01,
                  dropout: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Depth maps (N, size, size) of each shape under random rotation, scale, offset and camera distance,
    with sensor noise and missing returns; and their labels."""
    from scipy.spatial.transform import Rotation

    labels = np.repeat(np.arange(len(names)), n_per_class)
    maps = np.zeros((len(labels), size, size), dtype=np.float32)
    base = {name: _mesh(name) for name in names}
    for i, label in enumerate(labels):
        rotation = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        scale = rng.uniform(0.75, 1.15)
        offset = np.array([*rng.uniform(-0.25, 0.25, 2), rng.uniform(-0.3, 0.3)])
        depth = render_depth(base[names[label]], size, rng.uniform(*distance), rotation=rotation, scale=scale,
                             offset=offset)
        hit = depth > 0
        # sensor noise and missing returns, drawn for every pixel so that the random stream never depends on the
        # geometry: a ray that rounds the other way at an edge changes its own pixel, not every later sample
        depth[hit] += rng.normal(0, noise, (size, size)).astype(np.float32)[hit]
        depth[hit & (rng.random((size, size)) < dropout)] = 0.0
        maps[i] = depth
    return maps, labels


@register_dataset("shapes", "depth", version=3)
def shapes(n_per_class: int, seed: int, size: int = 48) -> RawData:
    """Eight primitive shapes under random rotation, scale and offset, with sensor noise and dropout."""
    rng = np.random.default_rng(seed)
    maps, labels = render_shapes(SHAPES, n_per_class, rng, size)
    order = rng.permutation(len(labels))
    return RawData("shapes", "depth", maps[order], labels[order], SHAPES)
