"""B2's reference: a minimal MLServer runtime that serves an ONNX file with onnxruntime.

MLServer imports this module (``implementation: mlserver_runtime.OnnxRuntime``
in ``model-settings.json``) inside ``benchmarks/.venv-mlserver``; the project's
own environment never imports it (``mlserver`` is not installed there). It does
what the agent's HTTP path does and nothing more: decode the OIP request's
tensors with MLServer's ``NumpyCodec``, run one ``InferenceSession`` opened with
the default session options on the CPU provider, encode every output. So B2
compares the two servers, not two model runtimes.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    """Serve ``parameters.uri`` (an ``.onnx`` file) through ``InferenceSession.run``."""

    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        self._session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        outputs = self._session.run(None, feeds)
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, array) for name, array in zip(self._output_names, outputs)])
