"""The ONNX Runtime sessions the shared turn models run on."""

from importlib import resources

import onnxruntime as ort


def onnx_session(package: str, name: str, threads: int) -> ort.InferenceSession:
    """A CPU session for the model file `name` shipped inside `package`."""
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = str(resources.files(package).joinpath(name))
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
