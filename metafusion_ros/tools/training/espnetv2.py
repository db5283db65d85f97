"""ESPNetv2 (Mehta et al., CVPR 2019) for segmentation in PyTorch, to run the authors' weights.

The encoder ("EESPNet", ``base_net``) is a 3x3 stride-2 convolution followed by three strided
units (``level2_0``, ``level3_0``, ``level4_0``) and 3 and 7 EESP blocks at 1/8 and 1/16. An EESP
block reduces with a 4-group 1x1 convolution, runs four depth-wise 3x3 convolutions whose
dilations follow the receptive-field limit of its level, adds them hierarchically (branch k =
its own output + branch k - 1), normalises their concatenation and expands it with a 4-group 1x1
convolution (+ the input when the shapes agree, then PReLU). A strided unit concatenates a 3x3
average pooling of its input with a stride-2 EESP and adds the input image, averaged down to the
unit's resolution, through a 3x3 and a 1x1 convolution ("input reinforcement").

The decoder goes back up from 1/16 to 1/2 with four efficient pyramid-pooling modules (EffPP:
project to ``min(classes // 2, 16)`` channels, five depth-wise 3x3 convolutions at 2, 1.5, 1, 0.5
and 0.1 times the resolution, concatenation, channel shuffle, grouped 3x3 and 1x1 convolutions)
with encoder features merged by gated point-wise convolutions (EfficientPWConv) at 1/8, 1/4 and
1/2; every upsampling is bilinear with ``align_corners=True``, the last one to the input size.
The authors' adaptive average pooling is written as strided means and index selections
(:func:`adaptive_avg_pool`), the same bins as ``F.adaptive_avg_pool2d``, which the ONNX exporter
does not take when the output does not divide the input.

Module and parameter names follow the authors' state dicts (EdgeNets,
``model/segmentation/espnetv2.py`` and its layers), so their ``.pth`` files load with
``load_state_dict(strict=True)``. Both sides of the input must be multiples of 16 (four
halvings whose decoder doublings must land on the encoder's sizes). PyTorch is imported only here
and in the training and export code; the node never needs it.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from metafusion_ros.tools.training.espnet import BnAct, Conv, ConvBn, ConvBnAct, ImagePool

__all__ = ['ESPNetv2', 'CHANNELS', 'SIZE_MULTIPLE', 'adaptive_avg_pool']

_EPS = 1e-5  # PyTorch's default, the authors' ESPNetv2 layers
# Output channels of level 1..4 per width scale s (the authors' ``sc_ch_dict``).
CHANNELS = {0.5: (16, 32, 64, 128), 1.0: (32, 64, 128, 256), 1.25: (32, 80, 160, 320),
            1.5: (32, 96, 192, 384), 2.0: (32, 128, 256, 512)}
_BRANCHES = 4
_RECEPTIVE_LIMIT = (13, 11, 9, 7)  # largest effective 3x3 kernel per level (strided unit 2..4)
_PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)
_PYRAMID_MIN = 5  # smallest side of a pyramid level
_DECODER_BASE = 16  # the authors' value for Cityscapes
SIZE_MULTIPLE = 16


def _bins(n: int, out: int) -> tuple[list[int], list[int]]:
    """Return the start and end indices of the ``out`` adaptive-pooling bins over ``n`` cells."""
    starts = [i * n // out for i in range(out)]
    ends = [-(-(i + 1) * n // out) for i in range(out)]
    return starts, ends


def _adaptive_mean(x: torch.Tensor, out: int, dim: int) -> torch.Tensor:
    """Average ``x`` along ``dim`` (2 or 3) over PyTorch's adaptive-pooling bins.

    Bins of one length k are a stride-1 k-window mean at the bins' starts; bins of several
    lengths (e.g. 32 -> 5: lengths 7 and 8) are gathered per length and put back in order.
    """
    n = int(x.shape[dim])  # a Python int while tracing: the bins are constants
    if n == out:
        return x

    def window(k: int, stride: int) -> torch.Tensor:
        kernel = (k, 1) if dim == 2 else (1, k)
        step = (stride, 1) if dim == 2 else (1, stride)
        return F.avg_pool2d(x, kernel, step)
    if n % out == 0:
        return window(n // out, n // out)
    starts, ends = _bins(n, out)
    lengths = [e - s for s, e in zip(starts, ends)]
    parts, order = [], []
    for k in sorted(set(lengths)):
        members = [i for i in range(out) if lengths[i] == k]
        index = torch.tensor([starts[i] for i in members], dtype=torch.long)
        parts.append(window(k, 1).index_select(dim, index))
        order += members
    if len(parts) == 1:
        return parts[0]
    inverse = torch.tensor(sorted(range(out), key=order.__getitem__), dtype=torch.long)
    return torch.cat(parts, dim).index_select(dim, inverse)


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return ``F.adaptive_avg_pool2d(x, size)`` as ONNX-exportable means (rows, then columns).

    The mean over a bin's rectangle is the mean over its rows of the means over its columns;
    equal to PyTorch's to float rounding (the summation order differs).
    """
    return _adaptive_mean(_adaptive_mean(x, size[0], 2), size[1], 3)


def _upsample(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Bilinear with ``align_corners=True`` to ``size``, or by 2 (the authors' resampling)."""
    if size is None:
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


class EESP(nn.Module):
    """Reduce, split into dilated depth-wise branches, fuse hierarchically, merge."""

    def __init__(self, cin: int, cout: int, stride: int = 1, receptive_limit: int = 7,
                 strided_unit: bool = False):
        super().__init__()
        width = cout // _BRANCHES
        if width * _BRANCHES != cout:
            raise ValueError(f'EESP: {cout} output channels do not split into {_BRANCHES}')
        kernels = sorted(k if k <= receptive_limit else 3
                         for k in (3 + 2 * i for i in range(_BRANCHES)))
        self.proj_1x1 = ConvBnAct(cin, width, 1, groups=_BRANCHES, eps=_EPS)
        self.spp_dw = nn.ModuleList(Conv(width, width, 3, stride, dilation=(k - 1) // 2,
                                         groups=width) for k in kernels)
        self.conv_1x1_exp = ConvBn(cout, cout, 1, groups=_BRANCHES, eps=_EPS)
        self.br_after_cat = BnAct(cout, eps=_EPS)
        self.module_act = nn.PReLU(cout)  # in the strided unit's state dict, unused there
        self.strided_unit = strided_unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (a strided unit's branch returns before the residual and PReLU)."""
        reduced = self.proj_1x1(x)
        branches = [self.spp_dw[0](reduced)]
        for conv in self.spp_dw[1:]:
            branches.append(conv(reduced) + branches[-1])
        expanded = self.conv_1x1_exp(self.br_after_cat(torch.cat(branches, 1)))
        if self.strided_unit:
            return expanded
        if expanded.shape == x.shape:
            expanded = expanded + x
        return self.module_act(expanded)


class DownSampler(nn.Module):
    """Halve: [3x3 average pooling, strided EESP] + the image at this resolution (reinforced)."""

    def __init__(self, cin: int, cout: int, receptive_limit: int):
        super().__init__()
        self.eesp = EESP(cin, cout - cin, stride=2, receptive_limit=receptive_limit,
                         strided_unit=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1)
        self.inp_reinf = nn.Sequential(ConvBnAct(3, 3, 3, eps=_EPS), ConvBn(3, cout, 1, eps=_EPS))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Return the unit's output; ``image`` is the input image averaged to the output size."""
        out = torch.cat([self.avg(x), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(image))


class EESPNet(nn.Module):
    """The ESPNetv2 encoder without its ImageNet head; features at 1/2, 1/4, 1/8 and 1/16."""

    def __init__(self, s: float):
        super().__init__()
        ch = CHANNELS[s]
        self.level1 = ConvBnAct(3, ch[0], 3, stride=2, eps=_EPS)
        self.level2_0 = DownSampler(ch[0], ch[1], _RECEPTIVE_LIMIT[0])
        self.level3_0 = DownSampler(ch[1], ch[2], _RECEPTIVE_LIMIT[1])
        self.level3 = nn.ModuleList(EESP(ch[2], ch[2], receptive_limit=_RECEPTIVE_LIMIT[2])
                                    for _ in range(3))
        self.level4_0 = DownSampler(ch[2], ch[3], _RECEPTIVE_LIMIT[2])
        self.level4 = nn.ModuleList(EESP(ch[3], ch[3], receptive_limit=_RECEPTIVE_LIMIT[3])
                                    for _ in range(7))
        self.halve = ImagePool(1)  # the authors' 3x3 stride-2 averaging of the image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the outputs of levels 1 to 4."""
        out1 = self.level1(x)
        image = self.halve(self.halve(x))
        out2 = self.level2_0(out1, image)
        image = self.halve(image)
        out3 = self.level3_0(out2, image)
        for block in self.level3:
            out3 = block(out3)
        out4 = self.level4_0(out3, self.halve(image))
        for block in self.level4:
            out4 = block(out4)
        return out1, out2, out3, out4


class SeqConvBnAct(nn.Module):
    """Convolution, batch normalisation and PReLU as one ``cbr`` sequence (decoder layers)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1):
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups,
                                           bias=False), *_bn_act(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise and activate."""
        return self.cbr(x)


class SeqBnAct(nn.Module):
    """Batch normalisation and PReLU as one ``br`` sequence (decoder layers)."""

    def __init__(self, ch: int):
        super().__init__()
        self.br = _bn_act(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and activate."""
        return self.br(x)


def _bn_act(ch: int) -> nn.Sequential:
    """Return ``Sequential(BatchNorm2d, PReLU)``."""
    return nn.Sequential(nn.BatchNorm2d(ch, eps=_EPS), nn.PReLU(ch))


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` channel groups: (N, g, C/g, H, W) transposed to (N, C/g, g, H, W)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shuffle the channels."""
        n, c, h, w = (int(side) for side in x.shape)
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(
            n, c, h, w)


class EfficientPyrPool(nn.Module):
    """Project, depth-wise 3x3 at five scales, concatenate, shuffle, merge (the EffPP module)."""

    def __init__(self, cin: int, proj: int, cout: int, last_layer_br: bool = True):
        super().__init__()
        levels = len(_PYRAMID_SCALES)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, padding=1, groups=proj, bias=False)
                                    for _ in _PYRAMID_SCALES)
        self.projection_layer = SeqConvBnAct(cin, proj, 1)
        self.merge_layer = nn.Sequential(SeqBnAct(proj * levels), ChannelShuffle(levels),
                                         SeqConvBnAct(proj * levels, proj, 3, groups=proj),
                                         nn.Conv2d(proj, cout, 1, bias=not last_layer_br))
        self.br = SeqBnAct(cout) if last_layer_br else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module at the input's resolution."""
        x = self.projection_layer(x)
        size = (int(x.shape[2]), int(x.shape[3]))
        out = self.merge_layer(torch.cat([self._level(stage, scale, x, size) for stage, scale
                                          in zip(self.stages, _PYRAMID_SCALES)], 1))
        return out if self.br is None else self.br(out)

    @staticmethod
    def _level(stage: nn.Module, scale: float, x: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
        """Run ``stage`` at ``scale`` times ``size`` (at least 5 a side), back to ``size``."""
        scaled = tuple(max(math.ceil(side * scale), _PYRAMID_MIN) for side in size)
        if scale < 1:
            return _upsample(stage(adaptive_avg_pool(x, scaled)), size)
        if scale > 1:
            return adaptive_avg_pool(stage(_upsample(x, scaled)), size)
        return stage(x)


class EfficientPWConv(nn.Module):
    """Grouped 3x3 convolution of encoder features gated by a global-context sigmoid."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                      nn.Sigmoid())
        self.expansion_layer = SeqConvBnAct(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the gated projection."""
        return self.expansion_layer(x) * self.wt_layer(x)


class ESPNetv2(nn.Module):
    """ESPNetv2 segmentation; logits ``(N, classes, H, W)``, H and W multiples of 16.

    ``s`` is the width scale of the encoder (``CHANNELS``); the decoder widths are the authors'
    Cityscapes ones (64, 48, 32, classes).
    """

    def __init__(self, classes: int, s: float = 2.0):
        super().__init__()
        if s not in CHANNELS:
            raise ValueError(f'ESPNetv2 scale s must be one of {sorted(CHANNELS)}, got {s}')
        self.s = s
        ch = CHANNELS[s]
        dec = (4 * _DECODER_BASE, 3 * _DECODER_BASE, 2 * _DECODER_BASE)
        proj = min(classes // 2, _DECODER_BASE)
        self.base_net = EESPNet(s)
        self.bu_dec_l1 = EfficientPyrPool(ch[3], proj, dec[0])
        self.bu_dec_l2 = EfficientPyrPool(dec[0], proj, dec[1])
        self.bu_dec_l3 = EfficientPyrPool(dec[1], proj, dec[2])
        self.bu_dec_l4 = EfficientPyrPool(dec[2], proj, classes, last_layer_br=False)
        self.merge_enc_dec_l2 = EfficientPWConv(ch[2], dec[0])
        self.merge_enc_dec_l3 = EfficientPWConv(ch[1], dec[1])
        self.merge_enc_dec_l4 = EfficientPWConv(ch[0], dec[2])
        self.bu_br_l2 = _bn_act(dec[0])
        self.bu_br_l3 = _bn_act(dec[1])
        self.bu_br_l4 = _bn_act(dec[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits at the input resolution."""
        out1, out2, out3, out4 = self.base_net(x)
        out = self.bu_dec_l1(out4)
        steps = ((out3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2),
                 (out2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3),
                 (out1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4))
        for skip, merge, norm, decode in steps:
            out = decode(norm(merge(skip) + _upsample(out)))
        return _upsample(out, (int(x.shape[2]), int(x.shape[3])))
