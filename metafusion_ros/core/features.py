"""Per-segment features (§3, eq. 6-10): the MetaSeg metrics fed to the meta classifier.

For each heatmap ``h`` in (E, M, V) (eq. 6-8) and segment ``k``: the means ``h``, ``h_in``,
``h_bd`` over the whole segment, its interior and its boundary; the population variances
``h_var``, ``h_var_in``, ``h_var_bd``; and the relative forms ``h_rel = h S/S_bd``,
``h_rel_in = h_in S_in/S_bd``, ``h_var_rel = h_var S/S_bd``, ``h_var_rel_in = h_var_in S_in/S_bd``.
Then sizes ``S, S_in, S_bd, S_rel, S_rel_in``, the geometric centre (eq. 9) and the neighbourhood
class distribution ``ndist_<class>`` (eq. 10, reference semantics: one event per boundary pixel
and per differently-labelled pixel of its 3x3 window; ignore neighbours count only in the
denominator). Interior quantities are 0 when ``S_in = 0``. A segment without boundary pixels (it
fills the frame) has ``S_bd = 0``; its relative forms use ``S_bd = 1``.
"""
from __future__ import annotations

import numpy as np

from metafusion_ros.core import kernels
from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.heatmaps import HEATMAPS

__all__ = ['feature_names', 'features_at', 'HEATMAP_STATS']

HEATMAP_STATS = ('', '_in', '_bd', '_rel', '_rel_in',
                 '_var', '_var_in', '_var_bd', '_var_rel', '_var_rel_in')
SIZE_FEATURES = ('S', 'S_in', 'S_bd', 'S_rel', 'S_rel_in')
CENTRE_FEATURES = ('mean_x', 'mean_y')


def neighbourhood_classes(table: ClassTable) -> tuple[int, ...]:
    """Return the classes with an ``ndist`` feature: every class but those merged away."""
    return tuple(y for y in range(table.num_classes) if y not in table.merged_away)


def feature_names(table: ClassTable) -> tuple[str, ...]:
    """Return the ordered feature schema for ``table`` (spec §3).

    30 heatmap features, 5 sizes, 2 centre coordinates and one ``ndist`` per class that can be
    predicted (45 for Cityscapes categories, 55 for the 19 classes with rider merged).
    """
    heat = tuple(h + s for h in HEATMAPS for s in HEATMAP_STATS)
    ndist = tuple(f'ndist_{table.class_names[y]}' for y in neighbourhood_classes(table))
    return heat + SIZE_FEATURES + CENTRE_FEATURES + ndist


def _heatmap_features(sums: np.ndarray, sizes: tuple[np.ndarray, np.ndarray, np.ndarray]
                      ) -> list[np.ndarray]:
    """Return one heatmap's 10 statistics in ``HEATMAP_STATS`` order (eq. 6-8).

    ``sums`` (n, 6): Σh and Σh² over the segment, its interior and its boundary; variances are
    the population form ``E[h²] - E[h]²``, 0 for an empty interior or boundary.
    """
    s, s_in, s_bd = sizes
    (mean, mean_in, mean_bd), (square, square_in, square_bd) = (
        [sums[:, j + i] / np.maximum(size, 1) for i, size in enumerate(sizes)] for j in (0, 3))
    var, var_in, var_bd = (square - mean * mean, square_in - mean_in * mean_in,
                           square_bd - mean_bd * mean_bd)
    rel, rel_in = s / np.maximum(s_bd, 1), s_in / np.maximum(s_bd, 1)
    return [mean, mean_in, mean_bd, mean * rel, mean_in * rel_in,
            var, var_in, var_bd, var * rel, var_in * rel_in]


def features_at(pixels: np.ndarray, sid: np.ndarray, pred: np.ndarray,
                heat: tuple[np.ndarray, np.ndarray, np.ndarray],
                table: ClassTable) -> np.ndarray:
    """Return the ``(n, F)`` features of segments given sparsely (spec §3, eq. 6-10).

    ``pixels`` are flat indices into ``pred`` (the label map the segments were formed on: it
    decides boundary and neighbourhood, eq. 10; values outside the table count as ignore),
    ``sid`` their segment ids 1..n, and ``heat`` the ``(E, M, V)`` values at those pixels, so
    that heatmaps need only be computed where there are segments. The sums come from one pass
    over the pixels (:func:`metafusion_ros.core.kernels.segment_sums`).
    """
    n = int(sid.max(initial=0))
    if n == 0:
        return np.zeros((0, len(feature_names(table))), dtype=np.float64)
    sums, events = kernels.segment_sums(pixels, sid, pred, heat, n, table.num_classes)
    s, s_in, s_bd = sums[:, 18], sums[:, 19], sums[:, 20]
    columns: list[np.ndarray] = []
    for i in range(len(heat)):
        columns += _heatmap_features(sums[:, 6 * i:6 * i + 6], (s, s_in, s_bd))
    safe_bd = np.maximum(s_bd, 1)
    columns += [s, s_in, s_bd, s / safe_bd, s_in / safe_bd]
    columns += [sums[:, 21] / s, sums[:, 22] / s]
    total = np.maximum(events.sum(axis=1), 1)
    columns += [events[:, y] / total for y in neighbourhood_classes(table)]
    return np.stack(columns, axis=1)
