"""Locust entry point: ``locust -f loadtest/locustfile.py --host http://127.0.0.1:8000``.

Users: ``TritonHttpUser`` (HTTP, ``--host``) and ``TritonGrpcUser`` (gRPC,
``--grpc-host``); pick one on the command line or with ``--class-picker`` in the
web UI. Traffic and shape options (``--ensemble``, ``--mix``,
``--request-batch-size``, ``--corpus``, ``--stages``, ``--stop-failure-ratio``,
``--record-file``) are added to Locust's parser here; defaults live in
``loadtest/locust.conf`` (``locust --config loadtest/locust.conf``).
"""

from __future__ import annotations

import logging
import os
import sys

import gevent
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC then cooperates with gevent

from locust import LoadTestShape, events  # noqa: E402

from trunkserve.loadtest.records import Record, write_records  # noqa: E402
from trunkserve.loadtest.shapes import parse_stages, shape_at  # noqa: E402
from trunkserve.loadtest.users import TritonGrpcUser, TritonHttpUser  # noqa: E402,F401

log = logging.getLogger("loadtest")
FAILURE_CHECK_MIN_REQUESTS = 20
_records: list[Record] = []
_csv_requested = False  # set at init: Locust closes its CSV files after the quit event


@events.init_command_line_parser.add_listener
def _add_options(parser):
    g = parser.add_argument_group("trunkserve")
    g.add_argument("--ensemble", default="multitask", help="ensemble to call: multitask or a task name")
    g.add_argument("--mix", default="", help="weighted per-task ensembles, e.g. sst2:3,mrpc:1 (overrides --ensemble)")
    g.add_argument("--request-batch-size", type=int, default=1, help="inputs per request")
    g.add_argument("--corpus", default="", help="text file (text[TAB]pair per line) or GLUE folder; default GLUE dev sets")
    g.add_argument("--stages", default="", help="staged shape, e.g. ramp:10:8,hold:30:8,step:20:16 (kind:seconds:users)")
    g.add_argument("--stop-failure-ratio", type=float, default=0.0, help="stop the test when failures exceed this ratio (0: never)")
    g.add_argument("--grpc-host", default="", help="host:port of Triton's gRPC endpoint for TritonGrpcUser")
    g.add_argument("--record-file", default="", help="write every request (start, ms, inputs, ok) as JSON lines here")


@events.request.add_listener
def _record(name, response_time, response_length, exception=None, context=None, **_):  # request_type in **_
    context = context or {}
    _records.append(
        Record(
            start=float(context.get("start", 0.0)),
            ms=float(response_time),
            inputs=int(context.get("inputs", response_length or 0)),
            ok=exception is None,
            name=name,
            error="" if exception is None else f"{type(exception).__name__}: {exception}"[:300],
        )
    )


def _watch_failures(environment, threshold: float) -> None:
    while True:
        gevent.sleep(1.0)
        total = environment.stats.total
        if total.num_requests >= FAILURE_CHECK_MIN_REQUESTS and total.fail_ratio > threshold:
            log.error("failure ratio %.3f > %.3f: stopping the test", total.fail_ratio, threshold)
            environment.process_exit_code = 3
            environment.runner.quit()
            return


@events.init.add_listener
def _on_init(environment, **_):
    opts = environment.parsed_options
    global _csv_requested
    _csv_requested = bool(opts is not None and getattr(opts, "csv_prefix", None))
    threshold = float(getattr(opts, "stop_failure_ratio", 0.0) or 0.0) if opts else 0.0
    if threshold > 0 and environment.runner is not None:
        gevent.spawn(_watch_failures, environment, threshold)


@events.test_stop.add_listener
def _on_stop(environment, **_):
    path = getattr(environment.parsed_options, "record_file", "") if environment.parsed_options else ""
    if path:
        write_records(path, _records)


@events.quit.add_listener
def _exit_without_finalisation(exit_code, **_):
    """Leave as soon as Locust is done, skipping interpreter finalisation.

    gevent-patched gRPC can hang there (a known class of gevent/grpc shutdown race):
    once, in a clean-clone CI run, a 2 s gRPC run printed its summary and then never
    exited. Records are written at ``test_stop`` and the stats are printed before
    ``quit`` fires, so nothing is lost; with ``--csv`` Locust still has files to close
    after this event, so it is left to exit normally.
    """
    if _csv_requested:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


class StagedShape(LoadTestShape):
    """``--stages`` if given, else Locust's ``-u/-r/-t`` (see ``loadtest.shapes``)."""

    use_common_options = True

    def tick(self):
        opts = self.runner.environment.parsed_options
        stages = parse_stages(getattr(opts, "stages", ""))
        t = self.get_run_time()
        if stages:
            return shape_at(stages, t)
        run_time = getattr(opts, "run_time", None)
        if run_time and t >= run_time:
            return None
        return int(opts.num_users or 1), float(opts.spawn_rate or 1)
