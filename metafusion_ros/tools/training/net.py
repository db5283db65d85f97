"""A small real segmentation CNN for the default and CamVid models (PyTorch, ``train`` extra).

``StreetNet`` is a compact encoder-decoder in the spirit of ENet / ESPNet / Fast-SCNN: a
residual encoder down to 1/16 of the input with dilated blocks and a pyramid-pooling context
module, and a U-Net style decoder that fuses the 1/8, 1/4 and 1/2 features so that small objects
(pedestrians) survive. About 1 M parameters. It outputs logits ``(N, C, H, W)`` at the input
resolution; the ONNX export appends a softmax (see :mod:`metafusion_ros.tools.training.train`).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['StreetNet', 'count_parameters']


class ConvBNReLU(nn.Sequential):
    """3x3 (or ``k``) convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3, dilation: int = 1):
        pad = dilation * (k - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Residual block: 3x3 conv then a factorised dilated (3x1, 1x3) conv, as in ERFNet."""

    def __init__(self, ch: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        d = dilation
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, (3, 1), 1, (d, 0), dilation=(d, 1), bias=False),
            nn.Conv2d(ch, ch, (1, 3), 1, (0, d), dilation=(1, d), bias=False),
            nn.BatchNorm2d(ch), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(x + body(x))``."""
        return F.relu(x + self.body(x))


class PyramidPooling(nn.Module):
    """Pyramid pooling context (PSPNet / Fast-SCNN): global and k x k average-pooled branches.

    Fixed pooling kernels (rather than fixed output bins) keep the module exportable to ONNX at
    any input size.
    """

    def __init__(self, ch: int, kernels: tuple[int, ...] = (0, 8, 4, 2)):
        super().__init__()
        self.kernels = kernels
        inner = ch // 4
        self.branches = nn.ModuleList(ConvBNReLU(ch, inner, k=1) for _ in kernels)
        self.fuse = ConvBNReLU(ch + inner * len(kernels), ch, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate ``x`` with its upsampled pooled branches and fuse them (0 = global)."""
        size = x.shape[2:]
        outs = [x]
        for k, branch in zip(self.kernels, self.branches):
            k = min(k, size[0], size[1])  # small inputs: at most the whole map
            pooled = x.mean((2, 3), keepdim=True) if k == 0 else F.avg_pool2d(x, k, k)
            y = branch(pooled)
            outs.append(F.interpolate(y, size=size, mode='bilinear', align_corners=False))
        return self.fuse(torch.cat(outs, dim=1))


class Up(nn.Module):
    """Decoder step: upsample to the skip's size, concatenate, fuse with two convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.fuse = nn.Sequential(ConvBNReLU(cin + cskip, cout), ConvBNReLU(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Return the fused features at the skip's resolution."""
        x = F.interpolate(x, size=skip.shape[2:], mode='bilinear', align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


class StreetNet(nn.Module):
    """Encoder-decoder segmentation CNN; ``widths`` are the channels at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int] = (24, 48, 96, 128),
                 dropout: float = 0.1):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stage1 = nn.Sequential(ConvBNReLU(3, w1, 2), ConvBNReLU(w1, w1))
        self.stage2 = nn.Sequential(ConvBNReLU(w1, w2, 2), ResBlock(w2), ResBlock(w2))
        self.stage3 = nn.Sequential(ConvBNReLU(w2, w3, 2), ResBlock(w3), ResBlock(w3, 2),
                                    ResBlock(w3, 4, dropout))
        self.stage4 = nn.Sequential(ConvBNReLU(w3, w4, 2), ResBlock(w4, 2, dropout),
                                    ResBlock(w4, 4, dropout), ResBlock(w4, 8, dropout),
                                    PyramidPooling(w4))
        self.up3 = Up(w4, w3, w3)
        self.up2 = Up(w3, w2, w2)
        self.up1 = Up(w2, w1, w1)
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, C, H, W)`` at the input resolution."""
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        y = self.stage4(s3)
        y = self.up1(self.up2(self.up3(y, s3), s2), s1)
        return F.interpolate(self.classifier(y), size=x.shape[2:], mode='bilinear',
                             align_corners=False)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
