"""Names ``vulture`` (min_confidence 60, pyproject.toml [tool.vulture]) cannot see used, each with who uses it.

Vulture reads this file, it is never run. Names only: vulture matches by name, so keep this list short
and give a reason for every line; an unused function or class of our own belongs deleted, not here.
"""

# ruff: noqa
# fmt: off

# Triton's Python backend: the generated model.py shims (export/shims.py) subclass these by name,
# and the backend calls initialize() and execute() on them.
OnnxModel, TokenizerModel, initialize, execute

# onnxruntime.SessionOptions: settings read by ONNX Runtime (serving/onnx_runtime.py).
_.graph_optimization_level, _.intra_op_num_threads, _.inter_op_num_threads
_.enable_profiling, _.profile_file_prefix  # ONNX Runtime session options read by ORT (loadtest/flops.py)

# argparse reads a sub-parser's formatter_class when it formats --help (export/cli.py).
_.formatter_class

# Locust: found by class in the locustfile (users.py, locustfile.py), attributes and methods it reads or calls.
TritonHttpUser, TritonGrpcUser, StagedShape, abstract, wait_time, on_start, on_stop, tick, use_common_options
_.process_exit_code  # the exit status Locust returns (locustfile.py, on a failure-ratio stop)

# Dataclass fields written out by dataclasses.asdict (JSON results and head.json), read by their readers.
format_version                                     # artifacts.HeadMeta -> head.json
cpu_util, deployment, memory_idle, model_mb, startup_s, locust_cpu_s, wall_s  # loadtest.compare Step, Measurement
mean_ms                                            # loadtest.records.WindowStats -> summary.json
processes, pss_mb                                  # loadtest.resources.Memory -> serving-cost.json
rule, student_rmse, teacher_rmse                   # training.quality.Verdict.to_dict -> head.json
teacher_metrics, student_metrics                   # training.trials.Trial (see below)
validation, truncated_train, task_description, best_seed, student_dir  # training.results -> glue.json, summaries
bytes_before, bytes_after                          # loadtest.tuning.GraphChange (see below)

# Library functions whose callers live outside the package.
run_batched  # serving.batching: reports/microbench/batching.py and tests/unit/test_batching.py
compose_haproxy_config  # fleet.local: tests/unit/test_docker.py regenerates docker/haproxy.cfg with it and compares
triton_version  # ngc: tests/unit/test_docker.py checks docker/Dockerfile's base image with it
run_seed     # training.trials: tests/unit/test_training_heads.py only (training/ is being restructured: decide there)
multitask_scores  # loadtest.int8.Variant: written through asdict, read by the markdown as a dict key
