"""Figures of the evaluation: FP vs FN (Fig. 4/5), feature importance (Fig. 6), collages."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.fusion import fuse
from metafusion_ros.tools.meta.collect import at_labels, CachedFrame

__all__ = ['fp_fn_figure', 'importance_figure', 'collage_figure']


def _pyplot():
    """Return matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def fp_fn_figure(rows: list[dict[str, Any]], tau: float, path: Path, title: str) -> Path:
    """Plot FP over FN: the α interpolation of the rules, MetaFusion at τ, FP+FN level sets."""
    plt = _pyplot()
    rules = [r for r in rows if r['rule'] in ('Bayes', 'ML')]
    rules = sorted({r['alpha']: r for r in rules}.values(), key=lambda r: r['alpha'])
    fusion = [r for r in rows if r['rule'] == 'MetaFusion' and r['tau'] == tau and r['fp'] >= 0]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot([r['fn'] for r in rules], [r['fp'] for r in rules], 'o-', color='tab:blue',
            label='Bayes → ML (α interpolation)')
    for r in rules:
        ax.annotate(f'{r["alpha"]:g}', (r['fn'], r['fp']), textcoords='offset points',
                    xytext=(4, 4), fontsize=7, color='tab:blue')
    for mode, (marker, colour) in zip(sorted({r['fusion'] for r in fusion}, reverse=True),
                                      (('s', 'tab:red'), ('^', 'tab:orange'))):
        points = [r for r in fusion if r['fusion'] == mode]
        ax.plot([r['fn'] for r in points], [r['fp'] for r in points], marker, color=colour,
                linestyle='none', label=f'MetaFusion, {mode} fusion (τ = {tau:g})')
        for r in points:
            ax.annotate(f'{r["alpha"]:g}', (r['fn'], r['fp']), textcoords='offset points',
                        xytext=(4, -10), fontsize=7, color=colour)
    points = rules + fusion
    top = max(r['fp'] + r['fn'] for r in points)
    low = min(r['fp'] + r['fn'] for r in points)
    for level in np.linspace(low, top, 6):
        ax.plot([0, level], [level, 0], ':', color='grey', linewidth=0.7)
    ax.set_xlim(0, max(r['fn'] for r in points) * 1.1 + 1)
    ax.set_ylim(0, max(r['fp'] for r in points) * 1.1 + 1)
    ax.set_xlabel('false negative segments (class c)')
    ax.set_ylabel('false positive segments (class c)')
    ax.set_title(title + '\n(dotted: level sets of FP + FN)', fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def importance_figure(importances: np.ndarray, names: tuple[str, ...], path: Path,
                      title: str, what: str = 'folds', top: int = 10) -> Path:
    """Plot the top features by mean importance over models (folds) with their std (Fig. 6)."""
    plt = _pyplot()
    mean, std = importances.mean(axis=0), importances.std(axis=0)
    order = np.argsort(mean)[::-1][:top]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.barh(np.arange(order.size)[::-1], mean[order], xerr=std[order], color='tab:green',
            capsize=3)
    ax.set_yticks(np.arange(order.size)[::-1], [names[i] for i in order], fontsize=8)
    spread = f'mean ± std over {importances.shape[0]} folds' if what == 'folds' else what
    ax.set_xlabel(f'total gain share, {spread}')
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _colour(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    """Return the palette image of a label map (ignore black)."""
    palette = table.palette_array()
    index = np.where(labels < table.num_classes, labels, table.num_classes)
    return palette[index]


def collage_figure(frames: list[tuple[CachedFrame, np.ndarray]], table: ClassTable, path: Path,
                   title: str) -> Path:
    """Show Bayes, ML, MetaFusion (reference fusion) and ground truth for a few frames."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(frames), 4, figsize=(12, 2.4 * len(frames)), squeeze=False)
    for row, (frame, keep) in zip(axes, frames):
        fused = fuse(frame.pred_bayes, frame.candidates, keep, table.target)
        panels = (('Bayes', frame.pred_bayes), ('ML', frame.pred_ml),
                  (f'MetaFusion, reference ({int(keep.sum())}/{keep.size} kept)', fused),
                  ('ground truth', frame.gt))
        for ax, (name, labels) in zip(row, panels):
            ax.imshow(_colour(at_labels(labels, frame.gt), table), interpolation='nearest')
            ax.set_title(f'{frame.ref.key}: {name}', fontsize=8)
            ax.axis('off')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
