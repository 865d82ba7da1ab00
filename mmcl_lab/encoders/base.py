"""The encoder contract: raw signals of one modality -> token features (B, T, F); text -> unit vectors.

Each encoder names the feature space it writes into, and the trainable head keeps one input adapter per
space. As in binding models (ImageBind, LanguageBind), an input always passes through the encoder of its
own format -- a waveform cannot be fed to an image pipeline -- so the space is known for every input.
What the modality-agnostic setting hides is the modality *label*: the label space, prompts and
alignment maps must then be chosen without it.
"""

from __future__ import annotations

import inspect
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..registry import ENCODERS
from ..utils import atomic_write_bytes, cache_path, digest, read_tensor_file, tensor_file_bytes

register_encoder = ENCODERS.register


class Encoder(nn.Module):
    """A frozen modality encoder; subclasses set the class attributes and implement preprocess/forward."""

    modality: str = ""
    feature_space: str = ""  # the head keeps one input adapter per space
    dim: int = 0  # F
    input_size: int = 64  # the side a reader's images and depth maps are conformed to before preprocess
    license: str = ""
    source: str = ""
    version: str = "1"  # bump when outputs change: the feature cache is keyed by it

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        """A raw batch (modality layout, see mmcl_lab.data) -> the network's input tensor."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:  # (B, ...) -> (B, T, F)
        raise NotImplementedError

    def cache_key(self) -> str:
        """Identity of this encoder's outputs, used by the feature cache."""
        # The encoder's code (its module and the shared helpers here) is part of the key: editing the
        # preprocessing invalidates cached features.
        sources = (inspect.getmodule(type(self)), log_mel, depth_to_image, image_channels, grey)
        code = "".join(inspect.getsource(obj) for obj in sources)
        return f"{self.feature_space}|{self.modality}|{type(self).__name__}|v{self.version}|{digest(code)}"


class TowerTop(nn.Module):
    """The top of a real model's modality tower, above its cached features: the last `layers` transformer layers
    (each with a prompt hook), the final norm and the projection into the model's text-aligned space."""

    layers: int = 0  # layers with a prompt hook
    width: int = 0  # width of a prompt token: the tower's hidden size
    log_scale: float = 0.0  # log of the logit scale the model was trained with (CLIP's logit_scale)

    def forward(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """(B, T, F) cached tokens [+ prompts (B, D, L, width), D <= layers, for the first D of these layers]
        -> (B, E) projected embeddings (not normalised)."""
        raise NotImplementedError


class Tower(Encoder):
    """A modality tower of a real aligned model (CLIP, CLAP, a binding model), cut `depth` layers below its top:
    forward() runs it up to the cut (the features the cache keeps), top() is the rest, which the model runs (the
    `towers` backbone); depth 0 caches the projected embedding itself, as one token per input (or per frame)."""

    depth: int = 0
    sample_rate: int = 0  # audio towers: the rate the checkpoint's processor asks for (readers decode at it)

    def top(self) -> TowerTop:
        """A copy of the layers above the cut, with the final norm and the projection, in its own module."""
        raise NotImplementedError

    def text_tower(self) -> TextEncoder | None:
        """The text tower this tower was aligned with, when the checkpoint holds one."""
        return None

    def cache_key(self) -> str:
        return f"{super().cache_key()}|cut{self.depth}"


def split_layers(layers: nn.ModuleList, depth: int, name: str) -> int:
    """Where a tower of len(layers) layers is cut to leave depth on top; an error naming the tower if it has fewer."""
    if not 0 <= depth <= len(layers):
        raise ValueError(f"model.prompt_depth={depth}: {name} has {len(layers)} layers; choose 0..{len(layers)}")
    return len(layers) - depth


class TextEncoder(nn.Module):
    """A frozen text encoder mapping strings to L2-normalised embeddings (N, E)."""

    dim: int = 0
    license: str = ""
    source: str = ""
    version: str = "1"

    def encode(self, texts: list[str]) -> Tensor:
        """(N,) strings -> (N, E) L2-normalised embeddings."""
        raise NotImplementedError


class CachedText(TextEncoder):
    """A text encoder behind an on-disk cache of what it embedded, keyed by the encoder's spec and code and the texts:
    the encoder itself is built only when texts come that it has not embedded before, so a warm run never loads
    MiniLM (5 s on 2 cores) to embed the class names it embedded last time."""

    def __init__(self, spec: str, cache_dir: str = ""):
        super().__init__()
        name = spec.partition("@")[0]
        cls = ENCODERS.get(name)
        self.spec, self.cache_dir, self.dim = spec, cache_dir, getattr(cls, "dim", 0)
        self.identity = f"{spec}|v{getattr(cls, 'version', '1')}|{digest(inspect.getsource(inspect.getmodule(cls)))}"
        self._encoder: TextEncoder | None = None

    @property
    def encoder(self) -> TextEncoder:
        """The encoder itself, built on first use."""
        if self._encoder is None:
            self._encoder = create_encoder(self.spec)
        return self._encoder

    def encode(self, texts: list[str]) -> Tensor:
        texts = list(texts)
        path = cache_path(self.cache_dir, "texts", self.spec.partition("@")[0].replace("/", "_"),
                          [self.identity, texts], ".safetensors")
        if path.exists():
            return read_tensor_file(path, "delete it and the texts are embedded again")[0]["embeddings"]
        embeddings = self.encoder.encode(texts).float().contiguous()  # (N, E)
        atomic_write_bytes(path, tensor_file_bytes({"embeddings": embeddings}))
        return embeddings


def safetensors_only(path: str, name: str) -> str:
    """The weights' location for encoder name; a local folder must hold safetensors weights: one with only pickled
    files (pytorch_model.bin, ...) is refused before anything reads them, since unpickling can run code."""
    if not path:
        raise ValueError(f"encoder {name!r} needs weights: use '{name}@<local dir or hub id>'")
    local = Path(path).expanduser()
    if local.is_dir() and not any(local.glob("*.safetensors")):
        pickled = sorted(p.name for p in (*local.glob("*.bin"), *local.glob("*.pt"), *local.glob("*.pth")))
        raise ValueError(f"{local}: no .safetensors weights" + (f"; pickled {pickled} are refused (they can run "
                         "code): convert them to model.safetensors" if pickled else ""))
    return path


def create_encoder(spec: str, depth: int = 0) -> nn.Module:
    """Build an encoder from "name" or "name@path-or-hub-id" (the argument goes to the constructor); a real
    model's Tower is cut depth layers below its top (other encoders have no cut and ignore it)."""
    name, _, arg = spec.partition("@")
    factory: Callable = ENCODERS.get(name)
    options = {"depth": depth} if isinstance(factory, type) and issubclass(factory, Tower) else {}
    encoder = factory(arg, **options) if arg else factory(**options)
    return encoder.eval().requires_grad_(False)


def seeded_init(name: str, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with weights drawn from a seed derived from name, leaving global RNGs untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        return build()


def log_mel(waves: Tensor, sample_rate: int, n_mels: int = 64, n_frames: int = 64) -> Tensor:
    """(B, L) waveforms -> (B, n_mels, n_frames) log-mel spectrograms scaled to [0, 1] per clip."""
    import torchaudio

    hop = max(1, waves.shape[-1] // n_frames)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels)
    spec = torchaudio.transforms.AmplitudeToDB(top_db=80.0)(mel.to(waves.device)(waves))
    spec = spec[..., :n_frames]
    lo = spec.amin(dim=(1, 2), keepdim=True)
    hi = spec.amax(dim=(1, 2), keepdim=True)
    return (spec - lo) / (hi - lo).clamp_min(1e-6)


def depth_to_image(depth: Tensor) -> Tensor:
    """(B, H, W) metres -> (B, H, W) in [0, 1], near = bright, background = 0 (per-map range)."""
    hit = depth > 0
    far = torch.where(hit, depth, torch.zeros_like(depth)).amax(dim=(1, 2), keepdim=True)
    near = torch.where(hit, depth, torch.full_like(depth, float("inf"))).amin(dim=(1, 2), keepdim=True)
    scaled = 0.2 + 0.8 * (far - depth) / (far - near).clamp_min(1e-6)
    return torch.where(hit, scaled, torch.zeros_like(depth))


def image_channels(x: np.ndarray) -> Tensor:
    """A batch of images, (B, H, W) grey or (B, H, W, 3) colour uint8 -> (B, C, H, W) float32 in [0, 1], C = 1 or 3."""
    t = as_float_tensor(x, 255.0)
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


def grey(images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W) luma (ITU-R 601, as PIL's convert("L")); one channel passes through."""
    if images.shape[1] == 1:
        return images[:, 0]
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1)


def as_float_tensor(x: np.ndarray, scale: float = 1.0) -> Tensor:
    """A NumPy batch as a float32 tensor divided by scale."""
    return torch.from_numpy(np.ascontiguousarray(x)).float() / scale
