"""The evaluation report: Markdown + CSV table (Table 2 layout), figures, exact command."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.classes import ClassTable
from .collect import load_frames
from .evaluate import Evaluation, results_table
from .figures import collage_figure, fp_fn_figure, importance_figure

__all__ = ['write_report', 'CSV_FIELDS']

CSV_FIELDS = ('rule', 'alpha', 'tau', 'miou', 'tp', 'fp', 'fn', 'delta', 'f1', 'added_tp_kept',
              'candidates', 'kept', 'rules_fp_at_fn', 'note')


def _write_csv(evaluation: Evaluation, path: Path) -> None:
    """Write every row (all α and τ) to ``path``."""
    with open(path, 'w', newline='') as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in evaluation.rows():
            writer.writerow({k: row[k] for k in CSV_FIELDS})


def _collage_frames(folder: Path, alpha: float, scores: np.ndarray, tau: float,
                    count: int = 3) -> list:
    """Return the ``count`` frames with the most candidates at α, with their keep masks."""
    frames, offset = [], 0
    for frame in load_frames(folder, alpha):
        n = frame.candidates.count
        frames.append((n, frame, scores[offset:offset + n] >= tau))
        offset += n
    frames.sort(key=lambda item: -item[0])
    return [(frame, keep) for n, frame, keep in frames[:count] if n > 0]


def _validation_lines(evaluation: Evaluation) -> list[str]:
    """Return the per-α cross-validation summary (ROC AUC per fold)."""
    lines = ['| α | candidates | true positives | CV | ROC AUC per fold (test drives) |',
             '|---|---|---|---|---|']
    for alpha, ml in sorted(evaluation.ml.items()):
        validation = evaluation.validation.get(alpha)
        if validation is None:
            lines.append(f'| {alpha:g} | {ml.candidates} | | – | '
                         f'{evaluation.notes.get(alpha, "")} |')
            continue
        metrics = validation.metrics()
        folds = ', '.join(f'{"–" if a is None else f"{a:.3f}"} ({"+".join(d)})'
                          for a, d in zip(metrics['auc_per_fold'],
                                          metrics['test_drives_per_fold']))
        lines.append(f'| {alpha:g} | {ml.candidates} | {int(validation.labels.sum())} '
                     f'| {metrics["cv"]} | {folds} |')
    return lines


def _summary_lines(rows: list[dict], tau: float) -> list[str]:
    """Return a plain statement of where MetaFusion beats the adjusted rules and where not."""
    fusion = [r for r in rows if r['rule'] == 'MetaFusion' and r['tau'] == tau and r['fp'] >= 0
              and r['candidates'] > 0]
    ml = {r['alpha']: r for r in rows if r['rule'] == 'ML'}
    lines = []
    for r in fusion:
        rules = r['rules_fp_at_fn']
        verdict = ('no adjusted rule reaches this FN' if np.isnan(rules) else
                   f'the adjusted rules need {rules:.1f} FP for the same FN: MetaFusion is '
                   f'{"better" if r["fp"] < rules else "not better"}')
        lines.append(f'- α = {r["alpha"]:g}: ML {ml[r["alpha"]]["fp"]} FP / '
                     f'{ml[r["alpha"]]["fn"]} FN (Δ {_number(ml[r["alpha"]]["delta"])}), '
                     f'MetaFusion {r["fp"]} FP / {r["fn"]} FN (Δ {_number(r["delta"])}, '
                     f'{_number(100 * r["added_tp_kept"], ".1f")} % of ML\'s added TPs kept); '
                     f'{verdict}.')
    return lines


def _number(value: float, spec: str = '.2f') -> str:
    """Format a number, nan as 'undefined'."""
    return 'undefined' if np.isnan(value) else f'{value:{spec}}'


def write_report(evaluation: Evaluation, folder: Path, table: ClassTable,
                 feature_names: tuple[str, ...], out_dir: str | Path, name: str, command: str,
                 description: str, tau: float) -> Path:
    """Write ``<name>.md``, ``<name>.csv`` and the three figures; return the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = evaluation.rows()
    _write_csv(evaluation, out_dir / f'{name}.csv')
    main = [r for r in rows if r['rule'] != 'MetaFusion' or r['tau'] == tau]
    fp_fn = fp_fn_figure(rows, tau, out_dir / f'{name}_fp_fn.png',
                         f'{name}: class {table.target_name}')
    lines = [f'# {name}: MetaFusion vs the adjusted rules (Table 2 layout)', '',
             f'Command: `{command}`', '', description, '',
             f'Class c = {table.target_name}; segment-wise counts (spec §6); Δ = extra FP per '
             f'removed FN relative to Bayes (eq. 17); "ML added TPs kept" = share of the false '
             f'negatives ML removes that MetaFusion also removes. MetaFusion rows are '
             f'out-of-fold at τ = {tau:g} (all τ in `{name}.csv`).', '']
    lines += results_table(main) + ['', f'## MetaFusion (τ = {tau:g}) against the adjusted rules',
                                    '']
    lines += _summary_lines(rows, tau) + ['', '## Cross-validation', '']
    lines += _validation_lines(evaluation)
    lines += ['', f'![FP vs FN]({fp_fn.name})', '']
    if evaluation.validation:
        alpha = max(evaluation.validation)
        validation = evaluation.validation[alpha]
        figure = importance_figure(validation.importances, feature_names,
                                   out_dir / f'{name}_importance.png',
                                   f'{name}: top features of the meta classifier, α = {alpha:g}')
        lines += [f'![feature importance]({figure.name})', '']
        frames = _collage_frames(folder, alpha, validation.scores, tau)
        if frames:
            collage = collage_figure(frames, table, out_dir / f'{name}_collage.png',
                                     f'{name}, α = {alpha:g}, τ = {tau:g}')
            lines += [f'![examples]({collage.name})', '']
    md = out_dir / f'{name}.md'
    md.write_text('\n'.join(lines) + '\n')
    return md
