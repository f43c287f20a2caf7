"""An ONNX Runtime session configured for a server shared by many model processes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def make_session(path: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 1, device: str = "cpu"):
    """Session with full graph optimisation and no thread spinning.

    Spinning threads busy-wait for work; with a tokenizer, a trunk and several
    heads each in its own process, they would burn the cores the others need.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = int(inter_op_threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


class GraphRunner:
    """Runs one graph on a dict of named inputs, returning the named outputs."""

    def __init__(self, session, output_names: Sequence[str] | None = None):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = list(output_names or [o.name for o in session.get_outputs()])

    def __call__(self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``output_names``: fetch only these (the outputs a batch's requests asked for); default all."""
        names = self.output_names if output_names is None else list(output_names)
        values = self.session.run(names, {n: feeds[n] for n in self.input_names})
        return dict(zip(names, values))
