#!/usr/bin/env python3
"""Closed-loop load generator of the pipeline benchmark.

`C` clients each submit one task, wait until it is done, and submit the next,
until `N` tasks are done. Both systems are driven and measured the same way:

- throughput = N / wall time (first submit to last task seen done);
- added latency of a task = (the moment the system durably recorded it done)
  - (the client's clock just before it submitted) - (the task's own run
  time as the system reports it). For sound-creator that is
  `completed_at - t_submit - metrics.inference_ms`; for Celery
  `date_done - t_submit - result.inference_ms` (the no-op's own time).
- client latency = submit until the client saw the final status (includes
  the polling interval): reported in the JSON line as well.

Both clients learn of completion by polling every `--poll-ms`: `GET
/v1/result/{id}` for sound-creator (or one `POST /v1/generate` that waits
server-side, with `--mode generate`), `GET celery-task-meta-<id>` on the
result Redis for Celery (what `AsyncResult.state` does).

With `--pids`, it also reports the CPU time the system under test spent per
measured task (user + system time of those processes and all their
descendants, read from /proc at the start and the end of the measured part),
and its own CPU time per task: on a shared 2-core machine that says what
each side costs, whoever hits the limit first.

Prints one JSON line with the numbers.
"""

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from datetime import datetime

FINAL = {"succeeded", "failed", "canceled", "expired"}
PROMPT = "lofi hip hop beat with warm piano"


def ts(raw):
    """RFC 3339 (any number of fraction digits, Z or +00:00) to epoch seconds."""
    raw = raw.replace("Z", "+00:00")
    if "." in raw:
        head, rest = raw.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tail = rest[len(digits):]
        raw = f"{head}.{digits[:6].ljust(6, '0')}{tail}"
    return datetime.fromisoformat(raw).timestamp()


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    rank = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[rank]


def process_tree_cpu_s(roots):
    """User + system CPU seconds of `roots` and all their live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # exited between listdir and open
        # the command name may hold spaces: the fields follow the last ')'
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    wanted, frontier = set(), set(roots)
    while frontier:
        wanted |= frontier
        frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier and pid not in wanted}
    return sum(stats[pid][1] for pid in wanted if pid in stats)


class CpuMeter:
    """CPU time of the system under test (`--pids` trees) and of this client."""

    def __init__(self, pids):
        self.pids = pids
        self.system0 = process_tree_cpu_s(pids) if pids else None
        self.client0 = time.process_time()

    def per_task_ms(self, done):
        if done <= 0:
            return {}
        out = {"client_cpu_ms_per_task": round((time.process_time() - self.client0) * 1000.0 / done, 3)}
        if self.pids:
            out["system_cpu_ms_per_task"] = round(
                (process_tree_cpu_s(self.pids) - self.system0) * 1000.0 / done, 3)
        return out


def summarize(args, system, config, wall, samples, errors):
    added = [s["added_ms"] for s in samples]
    client = [s["client_ms"] for s in samples]
    own = [s["own_ms"] for s in samples]
    return {
        "system": system,
        "config": config,
        "n": args.n,
        "concurrency": args.concurrency,
        "poll_ms": args.poll_ms,
        "done": len(samples),
        "errors": errors,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(len(samples) / wall, 1) if wall > 0 else 0.0,
        "added_p50_ms": round(percentile(added, 50), 2),
        "added_p99_ms": round(percentile(added, 99), 2),
        "client_p50_ms": round(percentile(client, 50), 2),
        "client_p99_ms": round(percentile(client, 99), 2),
        "own_p50_ms": round(percentile(own, 50), 2),
    }


# --------------------------------------------------------------- ours

async def run_ours(args):
    import aiohttp

    headers = {"Authorization": f"Bearer {args.token}"}
    body = {"type": "music", "prompt": PROMPT, "duration": args.duration, "user_id": "bench"}
    poll = args.poll_ms / 1000.0
    samples, errors = [], []

    async def one(session):
        t_submit = time.time()
        p0 = time.perf_counter()
        if args.mode == "generate":
            async with session.post("/v1/generate", json={**body, "wait_seconds": 60}) as r:
                doc = await r.json()
                if r.status not in (200, 202):
                    raise RuntimeError(f"generate answered {r.status}: {doc}")
            task_id = doc["task_id"]
        else:
            async with session.post("/v1/call", json=body) as r:
                doc = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"call answered {r.status}: {doc}")
            task_id = doc["task_id"]
        while doc.get("status") not in FINAL:
            await asyncio.sleep(poll)
            async with session.get(f"/v1/result/{task_id}") as r:
                doc = await r.json()
        seen = time.perf_counter()
        if doc["status"] != "succeeded":
            raise RuntimeError(f"task {task_id} ended {doc['status']}: {doc.get('error')}")
        own = float((doc.get("metrics") or {}).get("inference_ms") or 0)
        done = ts(doc["completed_at"])
        created = ts(doc["created_at"])
        started = ts(doc["started_at"]) if doc.get("started_at") else created
        return {
            "added_ms": (done - t_submit) * 1000.0 - own,
            "server_added_ms": (done - created) * 1000.0 - own,
            # where the added time goes: submit->created (HTTP + parse),
            # created->started (queue wait, incl. other tasks' work), and
            # started->completed minus the generation (worker + completion).
            "to_created_ms": (created - t_submit) * 1000.0,
            "queued_ms": (started - created) * 1000.0,
            "after_start_ms": (done - started) * 1000.0 - own,
            "client_ms": (seen - p0) * 1000.0,
            "own_ms": own,
        }

    connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(args.url, headers=headers, connector=connector, timeout=timeout) as session:
        for _ in range(args.warmup):
            await one(session)
        remaining = [args.n]

        async def client():
            while remaining[0] > 0:
                remaining[0] -= 1
                try:
                    samples.append(await one(session))
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(repr(e))

        meter = CpuMeter(args.pids)
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        wall = time.perf_counter() - start
        cpu = meter.per_task_ms(len(samples))
    out = summarize(args, "sound-creator", args.config, wall, samples, len(errors))
    out.update(cpu)
    out["mode"] = args.mode
    out["server_added_p50_ms"] = round(percentile([s["server_added_ms"] for s in samples], 50), 2)
    out["server_added_p99_ms"] = round(percentile([s["server_added_ms"] for s in samples], 99), 2)
    for part in ("to_created_ms", "queued_ms", "after_start_ms"):
        out[part.replace("_ms", "_p50_ms")] = round(percentile([s[part] for s in samples], 50), 2)
        out[part.replace("_ms", "_p99_ms")] = round(percentile([s[part] for s in samples], 99), 2)
    if errors:
        out["first_error"] = errors[0][:300]
    return out


# --------------------------------------------------------------- Celery

def run_celery(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import redis

    from celery_app import REDIS_URL, noop

    results = redis.Redis.from_url(REDIS_URL, max_connections=args.concurrency + 4)
    poll = args.poll_ms / 1000.0
    samples, errors = [], []
    lock = threading.Lock()

    def one():
        t_submit = time.time()
        p0 = time.perf_counter()
        handle = noop.apply_async(args=[PROMPT], kwargs={"work_ms": args.work_ms})
        key = f"celery-task-meta-{handle.id}"
        while True:
            time.sleep(poll)
            raw = results.get(key)
            if raw is None:
                continue
            meta = json.loads(raw)
            if meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                break
        seen = time.perf_counter()
        if meta["status"] != "SUCCESS":
            raise RuntimeError(f"task {handle.id} ended {meta['status']}: {meta.get('result')}")
        own = float(meta["result"]["inference_ms"])
        done = ts(meta["date_done"])
        return {"added_ms": (done - t_submit) * 1000.0 - own, "client_ms": (seen - p0) * 1000.0, "own_ms": own}

    for _ in range(args.warmup):
        one()
    remaining = [args.n]

    def client():
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                sample = one()
                with lock:
                    samples.append(sample)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.concurrency)]
    meter = CpuMeter(args.pids)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = meter.per_task_ms(len(samples))
    out = summarize(args, "Celery 5 + Redis", args.config, wall, samples, len(errors))
    out.update(cpu)
    if errors:
        out["first_error"] = errors[0][:300]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("system", choices=["ours", "celery"])
    p.add_argument("--url", default="http://127.0.0.1:8007", help="sound-creator base URL")
    p.add_argument("--token", default=os.environ.get("MARKETPLACE_TOKEN", "bench-token"))
    p.add_argument("--mode", choices=["poll", "generate"], default="poll", help="sound-creator: /v1/call + polling, or /v1/generate")
    p.add_argument("-n", type=int, default=500, help="tasks to measure")
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--poll-ms", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=5, help="tasks run one by one before measuring")
    p.add_argument("--duration", type=float, default=0.04, help="clip seconds (sound-creator)")
    p.add_argument("--work-ms", type=float, default=0.0, help="Celery task sleep, to mimic a generation")
    p.add_argument("--config", default="", help="label for the table")
    p.add_argument("--pids", type=lambda raw: [int(x) for x in raw.split(",") if x], default=[],
                   help="comma-separated pids of the system under test (their process trees are metered)")
    args = p.parse_args()
    out = asyncio.run(run_ours(args)) if args.system == "ours" else run_celery(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
