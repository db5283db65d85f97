"""ONNX Runtime backend (the default): CPU here, the CUDA execution provider where present."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter.base import Segmenter
from metafusion_ros.runtime.segmenter.spec import ModelSpec

__all__ = ['OnnxSegmenter', 'default_providers', 'session_options', 'CUDA_PROVIDER']

LOG = logging.getLogger(__name__)
CUDA_PROVIDER = 'CUDAExecutionProvider'


def default_providers() -> list[str]:
    """Return CUDA then CPU when ONNX Runtime offers CUDA, else CPU only."""
    available = ort.get_available_providers()
    return [p for p in (CUDA_PROVIDER, 'CPUExecutionProvider') if p in available]


def check_cuda_available() -> None:
    """Raise ``ValueError`` (one line) when this ONNX Runtime has no CUDA provider."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise ValueError(f'backend onnxruntime-cuda needs onnxruntime-gpu; this ONNX Runtime '
                         f'{ort.__version__} offers {", ".join(ort.get_available_providers())}')


def session_options(threads: int) -> ort.SessionOptions:
    """Return the segmenter's session options (``threads`` 0: ONNX Runtime's choice)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning: measured on 2 cores, the same network
    # time, and 50 ms less CPU a frame left to DDS, the executor and the camera driver.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return options


class OnnxSegmenter(Segmenter):
    """Run a segmentation ONNX model with ONNX Runtime.

    ``providers`` defaults to :func:`default_providers`; ``require_cuda`` refuses to run
    anywhere but on ONNX Runtime's CUDA provider (``onnxruntime-gpu``), which ONNX Runtime
    itself would silently replace by the CPU when its CUDA or cuDNN libraries are missing.
    """

    backend = 'onnxruntime'

    def __init__(self, model_path: str | Path, spec: ModelSpec, priors: Priors | None = None,
                 providers: Sequence[str] | None = None,
                 threads: int = 0, require_cuda: bool = False) -> None:
        super().__init__(model_path, spec, priors)
        options = session_options(threads)
        providers = list(providers or default_providers())
        if require_cuda:
            check_cuda_available()
            providers = [CUDA_PROVIDER, 'CPUExecutionProvider']
        try:
            self.session = ort.InferenceSession(str(self.model_path), options,
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ValueError(f'ONNX model {self.model_path}: ONNX Runtime cannot load it '
                             f'({str(exc).splitlines()[0]})') from exc
        self.providers = self.session.get_providers()
        if require_cuda and CUDA_PROVIDER not in self.providers:
            raise ValueError(f'ONNX model {self.model_path}: ONNX Runtime could not start its '
                             f'CUDA provider (CUDA 13 / cuDNN 9 libraries not found?); it would '
                             f'run on {", ".join(self.providers)}')
        self._output_names = [o.name for o in self.session.get_outputs()]
        LOG.info('ONNX Runtime session for %s on %s', self.model_path, self.providers)
        self.warm_up()

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the session; return every output by name."""
        feeds = {self.input_name: x}
        return dict(zip(self._output_names, self.session.run(self._output_names, feeds)))
