"""``TritonPythonModel`` implementations used by the generated ``model.py`` shims.

They only adapt Triton's request/response objects; the work is done by
``tokenizer_runtime``, ``onnx_runtime`` and ``batching``, which are tested
without a server. ``triton_python_backend_utils`` exists only inside the
Python-backend stub, hence the import inside ``initialize``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ..deployment.params import OnnxParams, TokenizerParams
from .batching import run_isolated
from .input_checks import InputError, bounds_from_graph, check_feed
from .onnx_runtime import GraphRunner, make_session
from .tokenizer_runtime import TextInputError, encode_request, load_tokenizer


def _version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def invalid_argument(pb, message: str):
    """A ``TritonError`` Triton answers as INVALID_ARGUMENT / HTTP 400: the caller's fault, not the server's."""
    code = getattr(pb.TritonError, "INVALID_ARG", None)  # error codes: Python backend 23.09 and later
    return pb.TritonError(message) if code is None else pb.TritonError(message, code)


def _checked(feed: dict, bounds: dict) -> InputError | None:
    try:
        check_feed(feed, bounds)
    except InputError as exc:
        return exc
    return None


def requested(request, outputs: list[str]) -> set[str]:
    """The outputs ``request`` asked for; all of ``outputs`` where it names none (or the stub cannot say)."""
    try:
        names = set(request.requested_output_names())
    except AttributeError:  # Python backends older than the call
        return set(outputs)
    return names & set(outputs) or set(outputs)


class OnnxModel:
    """Runs an ONNX graph (trunk, head or head group) with ONNX Runtime, merging same-shape requests.

    Only the outputs an execution's requests asked for are fetched and sent. Inside an
    ensemble a step asks for every output its ``output_map`` names (checked on Triton
    2.51: ``multitask`` asked for one task still asks that task's head group for all its
    members' outputs), so this saves the trunk's unrouted depths in a task's ensemble
    and the outputs a direct caller did not ask for; ONNX Runtime runs the whole graph either way.
    """

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = OnnxParams.from_config(config)
        device = params.device if args.get("model_instance_kind") == "GPU" else "cpu"
        graph = _version_dir(args) / params.onnx_file
        self.bounds = bounds_from_graph(graph)
        session = make_session(
            graph,
            intra_op_threads=params.intra_op_threads,
            inter_op_threads=params.inter_op_threads,
            device=device,
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.runner = GraphRunner(session, self.output_names)

    def execute(self, requests):
        pb = self.pb
        feeds = [{n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names} for r in requests]
        wanted = [requested(r, self.output_names) for r in requests]
        fetch = [n for n in self.output_names if any(n in w for w in wanted)]
        invalid = [_checked(f, self.bounds) for f in feeds]
        runnable = [i for i, bad in enumerate(invalid) if bad is None]
        run = partial(self.runner, output_names=fetch)
        outs = dict(zip(runnable, run_isolated([feeds[i] for i in runnable], run)))  # failures stay alone
        responses = []
        for i in range(len(feeds)):
            out = outs.get(i, invalid[i])
            if isinstance(out, InputError):
                responses.append(pb.InferenceResponse(error=invalid_argument(pb, str(out))))
            elif isinstance(out, Exception):
                responses.append(pb.InferenceResponse(error=pb.TritonError(f"{type(out).__name__}: {out}")))
            else:
                responses.append(pb.InferenceResponse([pb.Tensor(k, v) for k, v in out.items() if k in wanted[i]]))
        return responses


class TokenizerModel:
    """Text (+ optional pair) -> token id tensors padded to a length bucket, per request."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.tokenizer = load_tokenizer(_version_dir(args), TokenizerParams.from_config(json.loads(args["model_config"])))

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            pair = pb.get_input_tensor_by_name(request, "text_pair")
            try:
                out = encode_request(
                    self.tokenizer,
                    pb.get_input_tensor_by_name(request, "text").as_numpy(),
                    None if pair is None else pair.as_numpy(),
                )
            except TextInputError as exc:  # the client's fault: 400 / INVALID_ARGUMENT, not 500
                responses.append(pb.InferenceResponse(error=invalid_argument(pb, str(exc))))
                continue
            responses.append(pb.InferenceResponse([pb.Tensor(k, v) for k, v in out.items()]))
        return responses
