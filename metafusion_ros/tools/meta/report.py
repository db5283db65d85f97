"""The evaluation report: Markdown, CSV and JSON tables (Table 2 layout), figures, command."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.runtime.classifier import MetaBundle
from metafusion_ros.tools.meta.collect import load_frames
from metafusion_ros.tools.meta.evaluate import Evaluation, results_table
from metafusion_ros.tools.meta.figures import collage_figure, fp_fn_figure, importance_figure
from metafusion_ros.tools.meta.fit import ranking_metrics

__all__ = ['write_report', 'CSV_FIELDS', 'JSON_FIELDS', 'REPORT_FILES', 'json_rows']

# The files write_report may write, each <name> + one of these.
REPORT_FILES = ('.md', '.csv', '.json', '_fp_fn.png', '_importance.png', '_collage.png')
CSV_FIELDS = ('rule', 'fusion', 'alpha', 'tau', 'miou', 'tp', 'fp', 'fn', 'delta', 'f1',
              'added_tp_kept', 'candidates', 'kept', 'rules_fp_at_fn', 'note')


# Keys of every row of <name>.json (rule in lower case: bayes, ml, metafusion; fusion: the
# reading of spec §5, reference, literal or support, for MetaFusion rows, else null;
# fused_pixels and recovered: where MetaFusion's class-c pixels come from, else null).
JSON_FIELDS = ('rule', 'fusion', 'alpha', 'tau', 'fp', 'fn', 'tp', 'delta', 'kept_share', 'miou',
               'target_iou', 'candidates', 'candidate_tp', 'kept', 'kept_tp', 'meta_alpha',
               'class_iou', 'fused_pixels', 'recovered', 'note')


def _plain(value: Any) -> Any:
    """Return ``value`` with nan as None (JSON has no nan)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the rows in the JSON layout: nan as null, counts of untrained rules as null."""
    out = []
    for row in rows:
        item = {k: _plain(row[k]) for k in JSON_FIELDS if k in row}
        item.update(rule=row['rule'].lower(), kept_share=_plain(row['added_tp_kept']))
        if row['fp'] < 0:
            item.update(fp=None, fn=None, tp=None)
        out.append({k: item[k] for k in JSON_FIELDS})
    return out


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
    lines = ['| α | candidates | true positives | CV | ROC AUC per fold (test drives) '
             '| pooled ROC AUC | pooled AP |', '|---|---|---|---|---|---|---|']
    for alpha, ml in sorted(evaluation.ml.items()):
        validation = evaluation.validation.get(alpha)
        if validation is None:
            lines.append(f'| {alpha:g} | {ml.candidates} | {ml.candidate_tp} | – | '
                         f'{evaluation.notes.get(alpha, "")} | | |')
            continue
        metrics = validation.metrics()
        folds = ', '.join(f'{"–" if a is None else f"{a:.3f}"} ({"+".join(d)})'
                          for a, d in zip(metrics['auc_per_fold'],
                                          metrics['test_drives_per_fold']))
        lines.append(f'| {alpha:g} | {ml.candidates} | {ml.candidate_tp} '
                     f'| {metrics["cv"]} | {folds} | {_metric(metrics["auc_pooled"])} '
                     f'| {_metric(metrics["ap_pooled"])} |')
    return lines


def _fixed_lines(evaluation: Evaluation) -> list[str]:
    """Return, per α, the bundle member used and how well its scores rank these candidates."""
    lines = ['| α | member used | candidates | true positives | ROC AUC | AP |',
             '|---|---|---|---|---|---|']
    for alpha, scored in sorted(evaluation.scores.items()):
        metrics = ranking_metrics(scored.labels, scored.values)
        lines.append(f'| {alpha:g} | {scored.member:g} | {scored.labels.size} '
                     f'| {int(scored.labels.sum())} | {_metric(metrics["auc_pooled"])} '
                     f'| {_metric(metrics["ap_pooled"])} |')
    return lines


def _metric(value: float | None) -> str:
    """Format a ranking metric; None (one label only) as an en dash."""
    return '–' if value is None else f'{value:.3f}'


def _class_iou_lines(evaluation: Evaluation) -> list[str]:
    """Return the network's own (Bayes rule) mIoU and IoU per class on these frames."""
    ious = evaluation.bayes.class_iou()
    names = evaluation.table.class_names
    return [f'The network alone (Bayes rule): mIoU {evaluation.bayes.miou:.3f}; IoU per class:',
            '', '| ' + ' | '.join(names) + ' |', '|' + '---|' * len(names),
            '| ' + ' | '.join(_fmt_iou(v) for v in ious) + ' |']


def _fmt_iou(value: float) -> str:
    """Format an IoU; nan (class absent) as an en dash."""
    return '–' if np.isnan(value) else f'{value:.3f}'


def _decomposition_lines(evaluation: Evaluation, tau: float) -> list[str]:
    """Return where each reading's mIoU goes at the largest α with MetaFusion rows and ``tau``.

    The IoU per class against Bayes, and the label pixels each reading turns to c that Bayes
    gave another class (from the agreeing segments, from the kept candidates) with their
    ground truth, beside the false negatives of Bayes they remove.
    """
    valid = {(a, mode): r for (a, t, mode), r in evaluation.fusion.items()
             if t == tau and r.conf is not None and r.changed is not None}
    if not valid:
        return []
    alpha = max(a for a, _ in valid)
    results = {mode: r for (a, mode), r in valid.items() if a == alpha}
    table, bayes = evaluation.table, evaluation.bayes.class_iou()
    names, c = table.class_names, table.target
    lines = [f'## Where the mIoU goes (α = {alpha:g}, τ = {tau:g})', '',
             'IoU per class, each reading\'s change against Bayes in pp (classes that occur):', '',
             '| class | Bayes | ' + ' | '.join(results) + ' |',
             '|---|---|' + '---|' * len(results)]
    ious = {mode: r.class_iou() for mode, r in results.items()}
    for y in np.flatnonzero(~np.isnan(bayes)):
        lines.append(f'| {names[y]} | {bayes[y]:.3f} | ' + ' | '.join(
            f'{v[y]:.3f} ({100 * (v[y] - bayes[y]):+.2f})' for v in ious.values()) + ' |')
    lines.append(f'| **mIoU** | {evaluation.bayes.miou:.3f} | ' + ' | '.join(
        f'{r.miou:.3f} ({100 * (r.miou - evaluation.bayes.miou):+.2f})'
        for r in results.values()) + ' |')
    lines += ['', f'Label pixels each reading turns to {names[c]} that Bayes gave another class, '
              f'by source, with the share whose ground truth is {names[c]} and the classes they '
              f'take most from; and the false negatives of Bayes each removes, through those '
              f'pixels (agreeing segments / kept candidates / both):', '',
              '| fusion | from agreeing segments | ground truth | from kept candidates '
              '| ground truth | Bayes FN found: agreeing / candidates / both |',
              '|---|---|---|---|---|---|']
    for mode, r in results.items():
        cells = []
        for counts in r.changed:
            total = int(counts.sum())
            top = ', '.join(f'{names[y]} {100 * counts[y] / total:.0f} %'
                            for y in np.argsort(-counts)[:3] if counts[y]) if total else '–'
            cells += [f'{total} ({_share(counts[c], total)} {names[c]})', top]
        lines.append(f'| {mode} | ' + ' | '.join(cells) + ' | ' +
                     ' / '.join(map(str, r.recovered)) + ' |')
    return lines


def _share(part: int, total: int) -> str:
    """Format ``part / total`` as a percentage, an en dash for an empty total."""
    return f'{100 * part / total:.1f} %' if total else '–'


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
        lines.append(f'- α = {r["alpha"]:g}, {r["fusion"]} fusion: ML {ml[r["alpha"]]["fp"]} FP / '
                     f'{ml[r["alpha"]]["fn"]} FN (Δ {_number(ml[r["alpha"]]["delta"])}), '
                     f'MetaFusion {r["fp"]} FP / {r["fn"]} FN (Δ {_number(r["delta"])}, '
                     f'{_number(100 * r["added_tp_kept"], ".1f")} % of ML\'s added TPs kept); '
                     f'{verdict}.')
    return lines


def _number(value: float, spec: str = '.2f') -> str:
    """Format a number, nan as 'undefined'."""
    return 'undefined' if np.isnan(value) else f'{value:{spec}}'


def _figure_lines(evaluation: Evaluation, folder: Path, table: ClassTable,
                  feature_names: tuple[str, ...], out_dir: Path, name: str, tau: float,
                  bundle: MetaBundle | None) -> list[str]:
    """Draw the importance figure and the collage at the largest scored α; return their lines."""
    scored = {a: s for a, s in evaluation.scores.items() if s.values is not None}
    if not scored:
        return []
    alpha = max(scored)
    if bundle is None:
        importances, what = evaluation.validation[alpha].importances, 'folds'
    else:
        importances = bundle.members[scored[alpha].member].importances()[None]
        what = 'one fixed classifier'
    figure = importance_figure(importances, feature_names, out_dir / f'{name}_importance.png',
                               f'{name}: top features of the meta classifier, α = {alpha:g}',
                               what)
    lines = [f'![feature importance]({figure.name})', '']
    frames = _collage_frames(folder, alpha, scored[alpha].values, tau)
    if frames:
        collage = collage_figure(frames, table, out_dir / f'{name}_collage.png',
                                 f'{name}, α = {alpha:g}, τ = {tau:g}')
        lines += [f'![examples]({collage.name})', '']
    return lines


def write_report(evaluation: Evaluation, folder: Path, table: ClassTable,
                 feature_names: tuple[str, ...], out_dir: str | Path, name: str, command: str,
                 description: str, tau: float, bundle: MetaBundle | None = None) -> Path:
    """Write ``<name>.md``, ``.csv``, ``.json`` and the three figures; return the Markdown path.

    ``bundle``: the fixed meta model the evaluation used (None: out-of-fold, refit mode).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = evaluation.rows()
    _write_csv(evaluation, out_dir / f'{name}.csv')
    (out_dir / f'{name}.json').write_text(json.dumps(json_rows(rows), indent=1) + '\n')
    main = [r for r in rows if r['rule'] != 'MetaFusion' or r['tau'] == tau]
    fp_fn = fp_fn_figure(rows, tau, out_dir / f'{name}_fp_fn.png',
                         f'{name}: class {table.target_name}')
    how = 'out-of-fold (refit, folds grouped by drive)' if bundle is None else \
        f'scored by the fixed meta model `{bundle.path}`'
    lines = [f'# {name}: MetaFusion vs the adjusted rules (Table 2 layout)', '',
             f'Command: `{command}`', '', description, '',
             f'Class c = {table.target_name}; segment-wise counts (spec §6); Δ = extra FP per '
             f'removed FN relative to Bayes (eq. 17); "ML added TPs kept" = share of the false '
             f'negatives ML removes that MetaFusion also removes. MetaFusion rows are {how} '
             f'at τ = {tau:g} (all τ in `{name}.csv` and `{name}.json`).', '']
    lines += results_table(main) + ['', f'## MetaFusion (τ = {tau:g}) against the adjusted rules',
                                    '']
    lines += _summary_lines(rows, tau) + ['']
    decomposition = _decomposition_lines(evaluation, tau)
    lines += decomposition + [''] * bool(decomposition) + ['## The network on these frames', '']
    lines += _class_iou_lines(evaluation)
    if bundle is None:
        lines += ['', '## Cross-validation', ''] + _validation_lines(evaluation)
    else:
        lines += ['', '## The fixed meta model on these frames', ''] + _fixed_lines(evaluation)
    lines += ['', f'![FP vs FN]({fp_fn.name})', '']
    lines += _figure_lines(evaluation, folder, table, feature_names, out_dir, name, tau, bundle)
    md = out_dir / f'{name}.md'
    md.write_text('\n'.join(lines) + '\n')
    return md
