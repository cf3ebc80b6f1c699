"""The Celery side of the pipeline benchmark: one no-op task on a Redis broker
and a Redis result backend, with Celery's defaults unless BENCH_ACKS_LATE=1.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 celery -A celery_app worker --concurrency 1

BENCH_ACKS_LATE=1 turns on what a team that cares about not losing tasks
sets: acknowledge after the task ran (a worker killed mid-task gives the
message back), reject on worker loss, and prefetch one message at a time.
"""

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ACKS_LATE = os.environ.get("BENCH_ACKS_LATE", "0") == "1"

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)
if ACKS_LATE:
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
    )


@app.task(name="bench.noop")
def noop(prompt, work_ms=0.0):
    """Stands in for a generation: does nothing (or keeps a CPU busy for
    `work_ms`, as a CPU generation does) and reports its own time, like our
    result's `metrics.inference_ms`."""
    started = time.perf_counter()
    until = started + work_ms / 1000.0
    while time.perf_counter() < until:
        pass
    return {"inference_ms": (time.perf_counter() - started) * 1000.0, "prompt_len": len(prompt)}
