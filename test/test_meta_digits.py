"""The §5 protocol on scikit-learn's digits (Table 1 layout)."""
import csv
import re

import numpy as np
import pytest

from metafusion_ros.core.evaluation import SegmentCounts
from metafusion_ros.tools.cli import main
from metafusion_ros.tools.meta.digits import (digits_table, DigitsSetup, image_counts, run_class,
                                              write_table)


def test_image_counts_by_hand():
    """Each image is a one-pixel frame: FP = predicted c but not c, FN = c but not predicted."""
    table = digits_table(3)
    pred = np.array([3, 3, 1, 2, 3, 0])
    gt = np.array([3, 1, 3, 3, 2, 0])
    assert image_counts(pred, gt, table) == SegmentCounts(tp=1, fp=2, fn=2)


def test_one_minority_class():
    """Leaving out 90 % of c: ML finds more c than Bayes; MetaFusion lies between them."""
    row = run_class(8, DigitsSetup())
    assert row.bayes.tp + row.bayes.fn == row.ml.tp + row.ml.fn > 50
    assert row.ml.fn < row.bayes.fn and row.ml.fp >= row.bayes.fp
    assert row.fusion is not None and row.candidates > 0
    assert row.ml.fn <= row.fusion.fn <= row.bayes.fn
    assert row.bayes.fp <= row.fusion.fp <= row.ml.fp


def test_table_layout_and_single_class_note(tmp_path):
    """The table has one row per class plus the mean; untrainable classes are reported."""
    row = run_class(0, DigitsSetup(left_out=0.0))
    assert row.candidates == 0 and row.fusion is None and 'not trained' in row.note
    md, csv_path = write_table([row, run_class(8)], tmp_path, 'metafusion digits', DigitsSetup())
    text = md.read_text()
    assert '| 0 |' in text and '| mean |' in text and 'class 0: 0 candidates' in text
    with open(csv_path, newline='') as fh:
        assert [r['class'] for r in csv.DictReader(fh)] == ['0', '8', 'mean']


@pytest.mark.parametrize('args, message', [(['--folds', '1'], 'at least 2'),
                                           (['--left-out', '1.0'], 'in \\[0, 1\\)')])
def test_digits_command_bad_input(args, message, capsys):
    """Bad protocol settings give one-line errors."""
    assert main(['digits', *args]) == 2
    assert re.search(message, capsys.readouterr().err)
