"""Which network file a precision runs: the fp32 ONNX model or its static INT8 sibling.

``metafusion quantize`` writes the INT8 network of ``<stem>.onnx`` beside it as
``<stem>.int8.onnx`` with its spec ``<stem>.int8.json``; the spec records the SHA-256 of the fp32
file it was quantized from (``quantization.source.sha256``). With ``precision: int8`` the ONNX
Runtime backends load that sibling, after checking that it was made from this very fp32 file: the
fp32 model stays the reference (its digest is the one the meta classifier bundle is checked
against). TensorRT builds its own engines (fp32, fp16) from the fp32 file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from metafusion_ros.runtime.segmenter.base import file_sha256

__all__ = ['PRECISIONS', 'ONNX_PRECISIONS', 'INT8_SUFFIX', 'int8_sibling', 'network_file',
           'check_int8_source']

PRECISIONS = ('fp32', 'fp16', 'int8')
ONNX_PRECISIONS = ('fp32', 'int8')  # what ONNX Runtime runs: the model or its INT8 sibling
INT8_SUFFIX = '.int8'


def int8_sibling(model_path: str | Path) -> Path:
    """Return where the INT8 network of ``model_path`` lies: ``<stem>.int8.onnx`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f'{model_path.stem}{INT8_SUFFIX}{model_path.suffix}')


def network_file(model_path: str | Path, precision: str, backend: str) -> Path:
    """Return the ONNX file ``backend`` loads for ``model_path`` at ``precision``.

    ``fp32`` and every TensorRT precision load ``model_path`` itself; ``int8`` on ONNX Runtime
    loads :func:`int8_sibling` (``FileNotFoundError``, one line naming it and the command that
    makes it, when there is none); ``fp16`` on ONNX Runtime is a ``ValueError``.
    """
    model_path = Path(model_path)
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if precision == 'fp32' or backend == 'tensorrt':
        return model_path
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f'precision {precision} needs backend tensorrt, not {backend} (ONNX '
                         f'Runtime runs {" or ".join(ONNX_PRECISIONS)})')
    if not model_path.is_file():
        raise FileNotFoundError(f'ONNX model {model_path} does not exist')
    sibling = int8_sibling(model_path)
    if not sibling.is_file():
        raise FileNotFoundError(
            f'precision int8: model {model_path} has no INT8 network beside it ({sibling} does '
            f'not exist); make it with `metafusion quantize --model {model_path} --dataset D '
            f'--root R` (docs/segmenter.md, INT8)')
    return sibling


def check_int8_source(int8_path: str | Path, spec_extra: dict[str, Any],
                      model_path: str | Path) -> None:
    """Raise ``ValueError`` (one line) unless ``int8_path`` was quantized from ``model_path``.

    The INT8 spec's ``quantization.source.sha256`` must be the SHA-256 of the fp32 file.
    """
    record = spec_extra.get('quantization')
    source = record.get('source') if isinstance(record, dict) else None
    recorded = source.get('sha256') if isinstance(source, dict) else None
    if not isinstance(recorded, str):
        raise ValueError(f'INT8 model {int8_path}: its spec records no source network '
                         f'(quantization.source.sha256); make it with `metafusion quantize`')
    actual = file_sha256(model_path)
    if recorded != actual:
        raise ValueError(f'INT8 model {int8_path} was quantized from another network: its source '
                         f'sha256 is {recorded[:16]}…, {model_path} has {actual[:16]}…; '
                         f'quantize {model_path} again')
