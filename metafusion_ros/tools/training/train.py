"""Train :class:`~metafusion_ros.tools.training.net.StreetNet`; export it to ONNX (train extra).

Class-weighted cross-entropy (ENet weights ``1 / ln(1.02 + f_y)`` from the training label
frequencies ``f_y``), random scale / crop / flip / colour augmentation, AdamW with a poly learning
rate schedule that ends after ``epochs`` or after ``time_budget_min`` minutes, whichever comes
first (CPU time is scarce here). The checkpoint with the best validation mIoU is exported to ONNX
with a softmax output (NCHW ``probs``), evaluated on the test split at the label resolution
through the ONNX Runtime segmenter, and its settings, time and scores are written to a JSON file
next to the model (``<model>.json``, read by
:func:`metafusion_ros.runtime.segmenter.load_segmenter`).

PyTorch is imported only here and in :mod:`~metafusion_ros.tools.training.net`; nothing at node
run time needs it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
import json
import logging
import math
from pathlib import Path
import time
from typing import Iterator

import numpy as np
from PIL import Image
import torch
import torch.nn.functional as F
from tqdm import tqdm

from metafusion_ros.core.classes import ClassTable, table_by_name
from metafusion_ros.core.evaluation import confusion, group_iou, iou_per_class
from metafusion_ros.runtime.segmenter.preprocess import Preprocess
from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec
from metafusion_ros.tools.data.camvid import iter_camvid
from metafusion_ros.tools.data.cityscapes import iter_cityscapes
from metafusion_ros.tools.data.frame import FrameSource
from metafusion_ros.tools.training.net import StreetNet, count_parameters

__all__ = ['TrainConfig', 'frames', 'class_weights', 'train', 'export_onnx', 'evaluate_onnx',
           'rescore']

LOG = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in the model's JSON)."""

    dataset: str
    root: str
    output: str
    input_size: tuple[int, int] = (480, 360)  # (width, height) of the exported model
    crop_size: tuple[int, int] = (320, 240)   # (width, height) of the training crops
    export_size: tuple[int, int] | None = None  # exported input size; None: input_size
    scale_range: tuple[float, float] = (0.5, 1.5)
    widths: tuple[int, int, int, int] = (16, 32, 64, 112)
    batch_size: int = 8
    epochs: int = 200
    time_budget_min: float = 100.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    val_every: int = 2
    threads: int = 1  # more threads slow down badly on an oversubscribed CPU
    seed: int = 0
    max_images: int | None = None
    splits: tuple[str, str, str] = ('train', 'val', 'test')


def frames(dataset: str, root: str | Path, split: str, table: ClassTable) -> FrameSource:
    """Return the labelled frames of ``split`` (CamVid, or the Cityscapes/synthetic layout)."""
    if dataset == 'camvid':
        return iter_camvid(root, split, table)
    if dataset in ('cityscapes', 'synthetic'):
        return iter_cityscapes(root, split, table)
    raise ValueError(f'unknown dataset {dataset!r}; known: camvid, cityscapes, synthetic')


def _load_split(source: FrameSource, size: tuple[int, int],
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load images (N, H, W, 3) and labels (N, H, W) resized to ``size`` = (width, height)."""
    images, labels = [], []
    for k, frame in enumerate(tqdm(source, desc='loading', leave=False)):
        if limit is not None and k >= limit:
            break
        img, lab = Image.fromarray(frame.image), Image.fromarray(frame.labels)
        if img.size != size:
            img = img.resize(size, Image.BILINEAR)
            lab = lab.resize(size, Image.NEAREST)
        images.append(np.asarray(img, dtype=np.uint8))
        labels.append(np.asarray(lab, dtype=np.uint8))
    return np.stack(images), np.stack(labels)


def class_weights(labels: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """Return ENet class weights ``1 / ln(1.02 + f_y)`` from label frequencies ``f_y``."""
    valid = labels[labels != ignore_label].astype(np.int64)
    freq = np.bincount(valid, minlength=num_classes)[:num_classes] / max(valid.size, 1)
    return (1.0 / np.log(1.02 + freq)).astype(np.float32)


def _augment(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, ignore: int,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, crop (padding with ignore), horizontal flip and colour jitter."""
    cw, ch = cfg.crop_size
    out_x = torch.zeros(len(images), 3, ch, cw)  # padding: black (mean-subtracted below)
    out_y = torch.full((len(images), ch, cw), ignore, dtype=torch.long)
    for i in range(len(images)):
        lo, hi = cfg.scale_range
        s = lo + (hi - lo) * float(torch.rand(1, generator=gen))
        x = images[i].permute(2, 0, 1)[None].float() / 255.0
        y = labels[i][None, None].float()
        h, w = max(int(x.shape[2] * s), 8), max(int(x.shape[3] * s), 8)
        x = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)[0]
        y = F.interpolate(y, size=(h, w), mode='nearest')[0, 0].long()
        top = int(torch.randint(0, max(h - ch, 0) + 1, (1,), generator=gen))
        left = int(torch.randint(0, max(w - cw, 0) + 1, (1,), generator=gen))
        x, y = x[:, top:top + ch, left:left + cw], y[top:top + ch, left:left + cw]
        if float(torch.rand(1, generator=gen)) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        jitter = 1 + 0.4 * (torch.rand(3, generator=gen) - 0.5)  # brightness, contrast, sat.
        grey = x.mean(0, keepdim=True)
        x = (grey + (x - grey) * jitter[2]) * jitter[0]
        x = ((x - x.mean()) * jitter[1] + x.mean()).clamp(0, 1)
        out_x[i, :, :x.shape[1], :x.shape[2]] = x
        out_y[i, :y.shape[0], :y.shape[1]] = y
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (out_x - mean) / std, out_y


def _to_input(images: np.ndarray) -> torch.Tensor:
    """Normalise uint8 (N, H, W, 3) images to the network input (N, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (x - mean) / std


def _batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield shuffled index batches (the last, smaller one dropped)."""
    order = torch.randperm(n, generator=gen)
    for start in range(0, n - batch + 1, batch):
        yield order[start:start + batch]


@torch.no_grad()
def _evaluate(model: StreetNet, images: np.ndarray, labels: np.ndarray,
              table: ClassTable) -> np.ndarray:
    """Return the per-class IoU of ``model`` on (images, labels) at their resolution."""
    model.eval()
    plain = replace(table, merge=())
    conf = np.zeros((table.num_classes,) * 2, dtype=np.int64)
    for i in range(len(images)):
        pred = model(_to_input(images[i:i + 1])).argmax(1)[0].numpy().astype(np.uint8)
        conf += confusion(pred, labels[i], plain)
    model.train()
    return iou_per_class(conf)


def _lr_factor(epoch: float, elapsed_min: float, cfg: TrainConfig) -> tuple[float, float]:
    """Return (progress in [0, 1], learning-rate factor): linear warm-up then poly 0.9 decay."""
    progress = max(epoch / cfg.epochs, elapsed_min / cfg.time_budget_min)
    warm = min(1.0, (epoch + 1e-3) / max(cfg.warmup_epochs, 1e-3))
    return progress, warm * max(1.0 - progress, 0.0) ** 0.9


def train(cfg: TrainConfig, table: ClassTable | None = None, resume: bool = True) -> dict:
    """Train, keep the best validation checkpoint, export it to ONNX and write its JSON."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    table = table or table_by_name(cfg.dataset)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out.with_suffix('.ckpt')
    ckpt_dir.mkdir(exist_ok=True)
    size = tuple(cfg.input_size)
    tr_x, tr_y = _load_split(frames(cfg.dataset, cfg.root, cfg.splits[0], table), size,
                             cfg.max_images)
    va_x, va_y = _load_split(frames(cfg.dataset, cfg.root, cfg.splits[1], table), size,
                             cfg.max_images)
    weights = class_weights(tr_y, table.num_classes, table.ignore_label)
    model = StreetNet(table.num_classes, tuple(cfg.widths))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {'epoch': 0, 'elapsed_s': 0.0, 'best_miou': -1.0, 'history': []}
    last = ckpt_dir / 'last.pt'
    if resume and last.is_file():
        saved = torch.load(last, weights_only=True)  # tensors and plain data, never pickle
        model.load_state_dict(saved['model'])
        opt.load_state_dict(saved['opt'])
        state = saved['state']
        LOG.info('resumed from %s at epoch %d', last, state['epoch'])
    LOG.info('%d parameters, %d train / %d val images, class weights %s',
             count_parameters(model), len(tr_x), len(va_x), np.round(weights, 2).tolist())
    gen = torch.Generator().manual_seed(cfg.seed + state['epoch'])
    images_t, labels_t = torch.from_numpy(tr_x), torch.from_numpy(tr_y)
    w_t = torch.from_numpy(weights)
    start = time.time() - state['elapsed_s']
    progress = _lr_factor(state['epoch'], state['elapsed_s'] / 60, cfg)[0]  # 1: done, export
    while progress < 1.0:
        losses = []
        steps = len(tr_x) // cfg.batch_size
        for k, idx in enumerate(_batches(len(tr_x), cfg.batch_size, gen)):
            progress, factor = _lr_factor(state['epoch'] + k / steps,
                                          (time.time() - start) / 60, cfg)
            if progress >= 1.0:
                break
            for group in opt.param_groups:
                group['lr'] = cfg.lr * factor
            x, y = _augment(images_t[idx], labels_t[idx], cfg, table.ignore_label, gen)
            stats = {k: v.clone() for k, v in model.named_buffers()}
            loss = F.cross_entropy(model(x), y, weight=w_t, ignore_index=table.ignore_label)
            if not torch.isfinite(loss):
                LOG.warning('non-finite loss on images %s: step skipped', idx.tolist())
                model.load_state_dict(stats, strict=False)  # undo the batch-norm update
                continue
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
        state['epoch'] += 1
        state['elapsed_s'] = time.time() - start
        progress = _lr_factor(state['epoch'], state['elapsed_s'] / 60, cfg)[0]
        entry = {'epoch': state['epoch'], 'loss': float(np.mean(losses)) if losses else None,
                 'minutes': round(state['elapsed_s'] / 60, 2)}
        if state['epoch'] % cfg.val_every == 0 or progress >= 1.0:
            iou = _evaluate(model, va_x, va_y, table)
            entry['val_miou'] = float(np.nanmean(iou))
            entry['val_target_iou'] = float(iou[table.target])
            if entry['val_miou'] > state['best_miou']:
                state['best_miou'] = entry['val_miou']
                state['best_epoch'] = state['epoch']
                torch.save({'model': model.state_dict(), 'epoch': state['epoch']},
                           ckpt_dir / 'best.pt')
        state['history'].append(entry)
        LOG.info('%s', json.dumps(entry))
        torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), 'state': state}, last)
    return finish(cfg, table, state)


def finish(cfg: TrainConfig, table: ClassTable, state: dict) -> dict:
    """Export the best checkpoint to ONNX, evaluate it on val and test, write the JSON."""
    out = Path(cfg.output)
    model = StreetNet(table.num_classes, tuple(cfg.widths))
    model.load_state_dict(torch.load(out.with_suffix('.ckpt') / 'best.pt',
                                     weights_only=True)['model'])
    size = tuple(cfg.export_size or cfg.input_size)
    preprocess = Preprocess(width=size[0], height=size[1], mean=IMAGENET_MEAN, std=IMAGENET_STD)
    extra = {
        'architecture': {'name': 'StreetNet', 'widths': list(cfg.widths),
                         'parameters': count_parameters(model)},
        'training': {**asdict(cfg), 'epochs_done': state['epoch'],
                     'best_epoch': state.get('best_epoch'),
                     'minutes': round(state['elapsed_s'] / 60, 1),
                     'torch': torch.__version__, 'history': state['history']},
    }
    spec = ModelSpec(preprocess, OutputSpec('probs', 'softmax', 'NCHW'), table, extra=extra)
    export_onnx(model, out, size)
    spec.save(out.with_suffix('.json'))
    return rescore(out, cfg.dataset, cfg.root, cfg.splits[1:], cfg.max_images)


def rescore(path: str | Path, dataset: str, root: str | Path, splits: tuple[str, ...],
            limit: int | None = None) -> dict:
    """Evaluate the exported model on ``splits``; store the scores in its JSON; return it."""
    from metafusion_ros.runtime.segmenter import resolve_spec
    path = Path(path)
    spec = resolve_spec(path, None)
    scores = {split: evaluate_onnx(path, frames(dataset, root, split, spec.table), spec.table,
                                   limit) for split in splits}
    spec.extra['scores'] = scores
    spec.save(path.with_suffix('.json'))
    LOG.info('scores %s', json.dumps(scores))
    return spec.to_dict()


def export_onnx(model: StreetNet, path: Path, input_size: tuple[int, int]) -> None:
    """Export ``softmax(model(x))`` with a fixed ``(1, 3, H, W)`` input to ONNX opset 17."""
    wrapped = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    x = torch.zeros(1, 3, input_size[1], input_size[0])
    torch.onnx.export(wrapped, (x,), str(path), input_names=['image'], output_names=['probs'],
                      opset_version=17, dynamo=False)


def evaluate_onnx(path: Path, source: FrameSource, table: ClassTable,
                  limit: int | None = None) -> dict:
    """Return mIoU and per-class IoU of the ONNX model at the label resolution.

    Every class is scored on its own (no merge), as the network predicts it.
    """
    from metafusion_ros.runtime.segmenter import load_segmenter
    seg = load_segmenter(path)
    plain = replace(table, merge=())
    conf = np.zeros((table.num_classes,) * 2, dtype=np.int64)
    count = 0
    for frame in tqdm(source, desc='evaluating', leave=False):
        if limit is not None and count >= limit:
            break
        probs = seg.infer(frame.image).probs
        conf += confusion(probs.argmax(-1).astype(np.uint8), frame.labels, plain)
        count += 1
    iou = iou_per_class(conf)
    group = [table.target] + [src for src, dst in table.merge if dst == table.target]
    return {'images': count, 'miou': float(np.nanmean(iou)),
            'target_iou': float(iou[table.target]), 'target': table.target_name,
            'target_group': [table.class_names[c] for c in group],
            'target_group_iou': group_iou(conf, group),
            'iou': {n: (None if math.isnan(v) else float(v))
                    for n, v in zip(table.class_names, iou)}}
