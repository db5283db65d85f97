"""Choosing α and τ from evaluation results (beyond the paper) and writing them for the node.

Two criteria over the evaluated MetaFusion rows (every α and τ; the node publishes the fused
mask, so the plain ML rows are not operating points of it, and α = 0 is Bayes):

- ``max_fn``: the fewest false positives among rows with at most that many false negatives;
- ``fn_weight``: the smallest ``FP + w · FN`` (w = how many false positives one missed
  pedestrian is worth).

Ties go to fewer false negatives, then to the smaller α. The result is written into a ROS 2
parameter YAML under ``<node>: ros__parameters: {alpha, tau}``, keeping everything else.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any, Sequence

import yaml

__all__ = ['OperatingPoint', 'read_rows', 'choose', 'write_config']


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen (α, τ, fusion reading) with the counts it reached in the evaluation."""

    alpha: float
    tau: float
    fp: int
    fn: int
    rule: str
    fusion: str = 'reference'


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read an evaluation CSV (``metafusion evaluate``); raise ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'evaluation results {path} do not exist')
    with open(path, newline='') as fh:
        reader = csv.DictReader(fh)
        needed = {'rule', 'alpha', 'tau', 'fp', 'fn'}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise ValueError(f'evaluation results {path}: needs columns {sorted(needed)}, '
                             f'got {reader.fieldnames}')
        try:
            rows = [{'rule': r['rule'], 'alpha': float(r['alpha']), 'tau': float(r['tau']),
                     'fp': int(r['fp']), 'fn': int(r['fn']),
                     'fusion': r.get('fusion') or 'reference'} for r in reader]
        except ValueError as exc:
            raise ValueError(f'evaluation results {path}: bad value ({exc})') from exc
    return [r for r in rows if r['fp'] >= 0]


def _candidates(rows: list[dict[str, Any]], alphas: Sequence[float] | None, fusion: str
                ) -> list[OperatingPoint]:
    """Return the MetaFusion rows of ``fusion`` (at one of ``alphas`` if given) as points."""
    return [OperatingPoint(r['alpha'], r['tau'], r['fp'], r['fn'], r['rule'], fusion)
            for r in rows
            if r['rule'] == 'MetaFusion' and not math.isnan(r['tau'])
            and r.get('fusion', 'reference') == fusion
            and (alphas is None or any(abs(r['alpha'] - a) < 1e-9 for a in alphas))]


def choose(rows: list[dict[str, Any]], max_fn: int | None = None,
           fn_weight: float | None = None, alphas: Sequence[float] | None = None,
           fusion: str = 'reference') -> OperatingPoint:
    """Return the operating point by ``max_fn`` or ``fn_weight``.

    With ``alphas`` (e.g. the grid of the meta bundle the node loads) only those α are chosen;
    only rows of the ``fusion`` reading (spec §5) count.
    """
    if (max_fn is None) == (fn_weight is None):
        raise ValueError('give exactly one criterion: max_fn or fn_weight')
    points = _candidates(rows, alphas, fusion)
    if not points:
        where = '' if alphas is None else f' at alpha {", ".join(f"{a:g}" for a in alphas)}'
        raise ValueError(f'no evaluated operating points{where}')
    if max_fn is not None:
        feasible = [p for p in points if p.fn <= max_fn]
        if not feasible:
            best = min(p.fn for p in points)
            raise ValueError(f'no operating point has at most {max_fn} false negatives '
                             f'(the fewest is {best})')
        return min(feasible, key=lambda p: (p.fp, p.fn, p.alpha))
    if fn_weight < 0:
        raise ValueError(f'fn_weight must be non-negative, got {fn_weight}')
    return min(points, key=lambda p: (p.fp + fn_weight * p.fn, p.fn, p.alpha))


def write_config(path: str | Path, point: OperatingPoint, node: str = 'metafusion_node') -> Path:
    """Set ``alpha``, ``tau``, ``fusion`` under ``<node>: ros__parameters`` (others kept)."""
    path = Path(path)
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f'config {path}: not valid YAML ({exc})') from exc
        if not isinstance(config, dict):
            raise ValueError(f'config {path}: top level must be a mapping')
    section = config.setdefault(node, {})
    params = section.setdefault('ros__parameters', {}) if isinstance(section, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f'config {path}: {node}.ros__parameters must be a mapping')
    params['alpha'] = float(point.alpha)
    params['tau'] = float(point.tau)
    params['fusion'] = point.fusion
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
