"""ESPNet (Mehta et al., ECCV 2018) in PyTorch, to run the authors' pretrained weights.

ESPNet is an encoder ("ESPNet-C": strided convolutions and ESP blocks, each a 1x1 reduction
followed by five parallel 3x3 convolutions with dilations 1, 2, 4, 8, 16 whose outputs are summed
hierarchically and concatenated) and a light decoder that upsamples the 1/8 class map with
transposed convolutions, fusing the 1/4 and 1/2 features on the way. ``p`` and ``q`` are the
numbers of ESP blocks at 1/4 and 1/8 resolution (the published models: p = 2, q = 8).

Two decoder variants exist in the authors' code: the one their Cityscapes file was trained with
concatenates the 1/2 level's 16 convolution channels to the class map before the last 3x3
convolution (``decoder_skip=16``); the one of their CamVid file concatenates those 16 channels and
the 3 channels of the downsampled image (``decoder_skip=19``, a [C, C + 19, 3, 3] weight).

Module and parameter names follow the authors' state dicts, so their ``.pth`` files load with
``load_state_dict(strict=True)``. PyTorch is imported only here and in the training and export
code; the node never needs it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['ESPNet']

_BN_EPS = 1e-3
_DILATIONS = (1, 2, 4, 8, 16)


class Conv(nn.Module):
    """A bias-free convolution with "same" padding (dilated when ``dilation`` > 1, grouped)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1):
        super().__init__()
        pad = (k - 1) // 2 * dilation
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation,
                              groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolution."""
        return self.conv(x)


class BnAct(nn.Module):
    """Batch normalisation followed by a per-channel PReLU."""

    def __init__(self, ch: int, eps: float = _BN_EPS):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, eps=eps)
        self.act = nn.PReLU(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and activate."""
        return self.act(self.bn(x))


class ConvBn(Conv):
    """A convolution followed by batch normalisation."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 eps: float = _BN_EPS):
        super().__init__(cin, cout, k, stride, groups=groups)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve and normalise."""
        return self.bn(self.conv(x))


class ConvBnAct(ConvBn):
    """A convolution, batch normalisation and PReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 eps: float = _BN_EPS):
        super().__init__(cin, cout, k, stride, groups, eps)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise and activate."""
        return self.act(super().forward(x))


class _Pyramid(nn.Module):
    """Reduce, then five dilated 3x3 branches summed hierarchically and concatenated."""

    def __init__(self, cin: int, cout: int, reduce_k: int, stride: int):
        super().__init__()
        width = cout // 5
        self.c1 = Conv(cin, width, reduce_k, stride)
        for d in _DILATIONS:  # the first branch takes the channels the division leaves over
            out = cout - 4 * width if d == 1 else width
            setattr(self, f'd{d}', Conv(width, out, 3, dilation=d))

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """Return the concatenation ``[d1, d2, d2+d4, d2+d4+d8, d2+d4+d8+d16]``."""
        reduced = self.c1(x)
        parts = [self.d1(reduced)]
        total = None
        for d in _DILATIONS[1:]:
            branch = getattr(self, f'd{d}')(reduced)
            total = branch if total is None else total + branch
            parts.append(total)
        return torch.cat(parts, 1)


class DownsamplerESP(_Pyramid):
    """The strided ESP unit that halves the resolution (3x3 stride-2 reduction)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, reduce_k=3, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample by 2."""
        return self.act(self.bn(self.pyramid(x)))


class ESPBlock(_Pyramid):
    """The ESP block (1x1 reduction); residual when ``add`` (input and output widths equal)."""

    def __init__(self, cin: int, cout: int, add: bool = True):
        super().__init__(cin, cout, reduce_k=1, stride=1)
        self.bn = BnAct(cout)
        self.add = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.pyramid(x)
        return self.bn(x + out if self.add else out)


class ImagePool(nn.Module):
    """The input image averaged down ``times`` times by 3x3 stride-2 pooling."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample the image by ``2 ** times``."""
        for _ in range(self.times):
            x = self.pool(x)
        return x


class Encoder(nn.Module):
    """ESPNet-C: features at 1/2 (19 ch), 1/4 (131 ch) and the class map at 1/8."""

    def __init__(self, classes: int, p: int, q: int):
        super().__init__()
        self.level1 = ConvBnAct(3, 16, 3, stride=2)
        self.sample1 = ImagePool(1)
        self.sample2 = ImagePool(2)
        self.b1 = BnAct(16 + 3)
        self.level2_0 = DownsamplerESP(16 + 3, 64)
        self.level2 = nn.ModuleList(ESPBlock(64, 64) for _ in range(p))
        self.b2 = BnAct(128 + 3)
        self.level3_0 = DownsamplerESP(128 + 3, 128)
        self.level3 = nn.ModuleList(ESPBlock(128, 128) for _ in range(q))
        self.b3 = BnAct(256)
        self.classifier = Conv(256, classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return ``(level-1 conv, level-1 concat, level-2 concat, 1/8 class map)``."""
        conv1 = self.level1(x)
        cat1 = self.b1(torch.cat([conv1, self.sample1(x)], 1))
        down2 = self.level2_0(cat1)
        out2 = down2
        for block in self.level2:
            out2 = block(out2)
        cat2 = self.b2(torch.cat([out2, down2, self.sample2(x)], 1))
        down3 = self.level3_0(cat2)
        out3 = down3
        for block in self.level3:
            out3 = block(out3)
        return conv1, cat1, cat2, self.classifier(self.b3(torch.cat([down3, out3], 1)))


def _up(ch: int) -> nn.ConvTranspose2d:
    """Return a bias-free 2x2 stride-2 transposed convolution (doubles the resolution)."""
    return nn.ConvTranspose2d(ch, ch, 2, stride=2, bias=False)


class ESPNet(nn.Module):
    """ESPNet with the light decoder; logits ``(N, classes, H, W)`` at the input resolution.

    ``decoder_skip`` is 16 (Cityscapes file: the level-1 convolution output) or 19 (CamVid file:
    the level-1 output concatenated with the half-resolution image), see the module docstring.
    """

    def __init__(self, classes: int, p: int = 2, q: int = 8, decoder_skip: int = 16):
        super().__init__()
        if decoder_skip not in (16, 19):
            raise ValueError(f'decoder_skip must be 16 or 19, got {decoder_skip}')
        self.decoder_skip = decoder_skip
        self.encoder = Encoder(classes, p, q)
        self.level3_C = Conv(128 + 3, classes, 1)
        self.br = nn.BatchNorm2d(classes, eps=_BN_EPS)
        self.conv = ConvBnAct(decoder_skip + classes, classes, 3)
        self.up_l3 = nn.Sequential(_up(classes))
        self.combine_l2_l3 = nn.Sequential(BnAct(2 * classes),
                                           ESPBlock(2 * classes, classes, add=False))
        self.up_l2 = nn.Sequential(_up(classes), BnAct(classes))
        self.classifier = _up(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits at the input resolution (sides divisible by 8)."""
        conv1, cat1, cat2, coarse = self.encoder(x)
        up3 = self.up_l3(self.br(coarse))
        up2 = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(cat2), up3], 1)))
        skip = conv1 if self.decoder_skip == 16 else cat1
        return self.classifier(self.conv(torch.cat([up2, skip], 1)))
