#!/usr/bin/env python3
"""Simulates the GPU workers' autoscaling policy (terraform/autoscaling.tf) on a
week-long arrival trace with bursts and quiet hours, per model family, and
compares it with a fixed fleet sized for the peak.

This is a benchmark script, not a test: it prints a table for docs/deploy.md.
Standard library only.

What it models, minute by minute (the policies) and second by second (the
workers):
  * jobs arrive (one per sample of a task) and wait in the family's queue;
  * a ready worker takes up to `max_batch` jobs at once and generates them in
    one forward pass: (50 x longest clip + 3) decoder steps at the measured
    ms/step for that batch size (bench/autoscale_inputs.json: the H200 rows of
    issue 8 until bench/RESULTS.md has GPU rows), plus a fixed overhead;
  * the policies see CloudWatch data points `metric_delay_s` late:
      - wake: desired 0 and a visible message -> desired = max(1, min);
      - backlog (target tracking, scale-out only): when the last 3 data points
        of (visible + in flight) / tasks exceed the target, desired =
        ceil(desired x metric / target); the denominator is the running or
        the desired task count (`--denominator`, see the notes printed);
      - idle: when desired has exceeded max(ceil(backlog / target), min) for
        `idle_minutes` data points in a row, remove the excess (cooldown
        `idle_policy_cooldown_s`);
  * a scale-in stops idle workers only: a worker with a job in hand holds ECS
    task scale-in protection and stops when it next finds the queue empty;
  * each task needs a GPU instance: the capacity provider launches one after
    its reaction time, the instance boots, the task pulls the image,
    downloads and loads the model (cold start); an instance left empty is
    terminated after `instance_scale_in_s`, and a task placed on it before
    then only loads the model (warm start). GPU-hours are instance-hours.

Usage:
  python3 bench/autoscale_sim.py                       # the comparison table
  python3 bench/autoscale_sim.py --measure-load DIR    # time our binary loading a
      checkpoint directory (e.g. one made by
      tests/fixtures/make_musicgen_fixture.py --bench-small DIR) and record it
      in bench/autoscale_inputs.json
"""

import argparse
import heapq
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INPUTS = os.path.join(HERE, "autoscale_inputs.json")
DAY = 86400


# ---------------------------------------------------------------------------
# Throughput


def ms_per_step(table, batch):
    """Per-step time at `batch`, interpolated linearly in log(batch) between
    the measured batch sizes (and held flat past the largest)."""
    points = sorted((int(b), float(ms)) for b, ms in table.items())
    if batch <= points[0][0]:
        return points[0][1]
    for (b0, m0), (b1, m1) in zip(points, points[1:]):
        if batch <= b1:
            f = (math.log(batch) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return m0 + f * (m1 - m0)
    return points[-1][1]


def batch_seconds(fam, durations):
    steps = fam["frame_rate_hz"] * max(durations) + fam["extra_steps"]
    return steps * ms_per_step(fam["ms_per_step"], len(durations)) / 1000.0 + fam["overhead_s_per_batch"]


# ---------------------------------------------------------------------------
# Arrival trace: a week of tasks with a diurnal shape, quiet nights, a quieter
# weekend and a few bursts a day (a marketplace campaign, a client's batch).


def arrivals(family, days=7, seed=7, load=10.0):
    """Tasks (arrival second, clip seconds), one entry per sample. `load`
    scales the day-time rate and the bursts, not the quiet hours."""
    rng = random.Random(f"{family}-{seed}")
    scale = load * (1.0 if family == "music" else 0.4)
    if family == "music":
        durations = [(5, 0.20), (8, 0.25), (10, 0.25), (15, 0.15), (30, 0.15)]
    else:
        durations = [(3, 0.3), (5, 0.3), (8, 0.2), (10, 0.2)]
    samples = [(1, 0.6), (2, 0.25), (4, 0.15)]

    def pick(choices):
        x, acc = rng.random(), 0.0
        for value, p in choices:
            acc += p
            if x < acc:
                return value
        return choices[-1][0]

    bursts = []
    for day in range(days):
        for _ in range(rng.choice([2, 3, 4]) if day % 7 < 5 else 1):
            start = day * DAY + rng.uniform(9, 21) * 3600
            bursts.append((start, start + rng.uniform(10, 30) * 60, rng.uniform(15, 40)))

    def rate_per_min(t):
        day, hour = int(t // DAY), (t % DAY) / 3600
        if hour < 7:
            return 0.1  # quiet hours: a task every ten minutes or so
        base = 1.0 + 1.0 * math.sin(math.pi * (hour - 7) / 16)  # 1..2 tasks/min by day
        if day % 7 >= 5:
            base *= 0.5
        for start, end, peak in bursts:
            if start <= t < end:
                base += peak
        return base * scale

    tasks, t, horizon = [], 0.0, days * DAY
    max_rate = max(rate_per_min(x) for x in range(0, int(horizon), 60)) / 60.0 + 1e-9
    while True:  # thinning of a non-homogeneous Poisson process
        t += rng.expovariate(max_rate)
        if t >= horizon:
            break
        if rng.random() < rate_per_min(t) / 60.0 / max_rate:
            duration = pick(durations)
            for _ in range(pick(samples)):
                tasks.append((t, duration))
    return tasks, bursts


# ---------------------------------------------------------------------------
# The simulation


class Instance:
    __slots__ = ("launched", "ready_at", "task", "empty_since", "warm", "terminated")

    def __init__(self, now, boot_s):
        self.launched = now
        self.ready_at = now + boot_s
        self.task = None
        self.empty_since = None
        self.warm = False  # image and model already on its volume
        self.terminated = None


class Task:
    __slots__ = ("instance", "ready_at", "busy_until", "batch", "stopping")

    def __init__(self):
        self.instance = None
        self.ready_at = None  # generation can start from here
        self.busy_until = None
        self.batch = None
        self.stopping = False


def simulate(family, jobs, inputs, policy, fixed=None):
    fam = inputs["throughput"]["families"][family]
    cold = inputs["cold_start"]
    sc = inputs["scaling"]
    load_s = cold["model_load_s"][family]
    if load_s is None:
        sys.exit("bench/autoscale_inputs.json has no measured model load time; run --measure-load first")
    max_batch = policy["max_batch"]
    horizon = jobs[-1][0] + 3600
    queue = []  # (arrival, duration), FIFO
    qi = 0  # next arrival
    waits = []
    instances, tasks = [], []
    pending_launch = []  # heap of launch times for tasks waiting for an instance
    desired = fixed if fixed is not None else policy["min"]
    datapoints = []  # per minute: (visible_max, in_flight_max, running_avg, desired)
    minute_acc = [0, 0, 0.0, 0]
    last_idle_action = -1e9

    def start_task(now):
        task = Task()
        tasks.append(task)
        free = [i for i in instances if i.terminated is None and i.task is None and i.ready_at <= now]
        if free:
            inst = free[0]
            inst.task, inst.empty_since = task, None
            task.instance = inst
            task.ready_at = now + cold["container_start_s"] + load_s + (
                0 if inst.warm else cold["image_pull_s"] + cold["model_download_s"]
            )
            inst.warm = True
        else:
            heapq.heappush(pending_launch, (now + cold["capacity_provider_reaction_s"], id(task), task))

    warm_pool = policy.get("warm_pool", False)

    def stop_task(task, now):
        tasks.remove(task)
        if task.instance is not None:
            task.instance.task, task.instance.empty_since = None, now

    if fixed is not None:
        for _ in range(fixed):
            inst = Instance(-3600, 0)
            inst.warm = True
            instances.append(inst)
            task = Task()
            task.instance, task.ready_at = inst, 0
            inst.task = task
            tasks.append(task)

    now = 0
    while now < horizon or queue or any(t.batch for t in tasks):
        while qi < len(jobs) and jobs[qi][0] <= now:
            queue.append(jobs[qi])
            qi += 1
        # Instances: launches for waiting tasks, and placement once booted.
        while pending_launch and pending_launch[0][0] <= now:
            _, _, task = heapq.heappop(pending_launch)
            if task in tasks and task.instance is None:
                # From the warm pool: a stopped instance that has served
                # before starts with the image and the model on its volume.
                boot = cold["warm_pool_start_s"] if warm_pool else cold["instance_boot_s"]
                inst = Instance(now, boot)
                inst.warm = warm_pool
                inst.task, task.instance = task, inst
                instances.append(inst)
        for task in tasks:
            if task.ready_at is None and task.instance is not None and task.instance.ready_at <= now:
                fetch = 0 if task.instance.warm else cold["image_pull_s"] + cold["model_download_s"]
                task.ready_at = now + cold["container_start_s"] + fetch + load_s
                task.instance.warm = True
        # Workers.
        for task in list(tasks):
            if task.batch is not None and task.busy_until <= now:
                task.batch = None
            if task.batch is None and task.ready_at is not None and task.ready_at <= now:
                if queue:
                    batch = queue[:max_batch]
                    del queue[:max_batch]
                    for arrival, _ in batch:
                        waits.append(now - arrival)
                    task.batch = batch
                    task.busy_until = now + batch_seconds(fam, [d for _, d in batch])
                elif task.stopping:
                    stop_task(task, now)  # protection off: the scale-in takes it
        # Empty instances go after the capacity provider's scale-in delay.
        if fixed is None:
            for inst in instances:
                if inst.terminated is None and inst.task is None and inst.empty_since is not None:
                    if now - inst.empty_since >= sc["instance_scale_in_s"]:
                        inst.terminated = now
        # Metrics of this second, folded into the minute's data point.
        in_flight = sum(len(t.batch) for t in tasks if t.batch)
        running = sum(1 for t in tasks if t.ready_at is not None and t.instance is not None and t.instance.ready_at <= now)
        minute_acc[0] = max(minute_acc[0], len(queue))
        minute_acc[1] = max(minute_acc[1], in_flight)
        minute_acc[2] += running / 60.0
        minute_acc[3] = max(minute_acc[3], desired)
        now += 1
        if now % 60 == 0:
            datapoints.append(tuple(minute_acc))
            minute_acc = [0, 0, 0.0, 0]
            if fixed is None and now % sc["policy_period_s"] == 0:
                desired, last_idle_action = apply_policies(
                    datapoints, desired, policy, sc, now, last_idle_action
                )
                # The service converges on `desired`.
                live = [t for t in tasks if not t.stopping]
                for _ in range(desired - len(live)):
                    revived = next((t for t in tasks if t.stopping), None)
                    if revived is not None:
                        revived.stopping = False
                    else:
                        start_task(now)
                live = [t for t in tasks if not t.stopping]
                excess = len(live) - desired
                # Idle (unprotected) tasks first, then the newest.
                for task in sorted(live, key=lambda t: (t.batch is not None, -(t.ready_at or 1e18))):
                    if excess <= 0:
                        break
                    excess -= 1
                    if task.batch is None:
                        stop_task(task, now)
                    else:
                        task.stopping = True
        if now > horizon + 7 * DAY:
            raise RuntimeError("the simulation does not drain")
    # GPU time within the trace's days, the same window for every fleet.
    window = math.ceil(jobs[-1][0] / DAY) * DAY

    def within(t):
        return min(max(t, 0), window)

    gpu_seconds = sum(
        within(i.terminated if i.terminated is not None else now) - within(i.launched) for i in instances
    )
    # A warm pool keeps up to max_tasks stopped instances: their volumes cost
    # storage, not GPU time.
    pooled_gb_hours = (policy["max"] * inputs["price"]["volume_gb"] * window / 3600.0) if warm_pool else 0.0
    storage_usd = pooled_gb_hours * inputs["price"]["ebs_gb_month_usd"] / 730.0
    return waits, gpu_seconds / 3600.0, storage_usd


def apply_policies(points, desired, policy, sc, now, last_idle_action):
    # The data points an alarm can see: the last `metric_delay_s` are not in.
    lag = math.ceil(sc["metric_delay_s"] / 60)
    seen = points[: len(points) - lag] if lag else points
    if not seen:
        return desired, last_idle_action
    target = policy["target"]

    def per_task(p):
        visible, in_flight, running, desired_then = p
        denominator = running if policy["denominator"] == "running" else desired_then
        return (visible + in_flight) / denominator if denominator > 0 else 0.0

    visible, in_flight, _, _ = seen[-1]
    # wake
    if desired == 0 and visible > 0:
        return max(1, policy["min"]), last_idle_action
    # backlog: target tracking, scale-out only
    n = sc["target_tracking_datapoints"]
    if len(seen) >= n and all(per_task(p) > target for p in seen[-n:]):
        want = math.ceil(desired * per_task(seen[-1]) / target)
        desired = min(policy["max"], max(desired, want))
        return desired, last_idle_action
    # idle: the excess over what the backlog needs, for idle_minutes in a row
    m = policy["idle_minutes"]

    def excess(p):
        v, f, _, d = p
        return d - max(math.ceil((v + f) / target), policy["min"])

    if len(seen) >= m and all(excess(p) >= 1 for p in seen[-m:]) and now - last_idle_action >= sc["idle_policy_cooldown_s"]:
        desired = max(policy["min"], desired - excess(seen[-1]))
        last_idle_action = now
    return desired, last_idle_action


def percentile(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# ---------------------------------------------------------------------------
# Model load measurement


def measure_load(checkpoint, binary, runs, python):
    """Times `sound-creator worker` from spawn to its "worker started" line
    (config, tokenizer, safetensors read, weights into libtorch tensors,
    device placement), and transformers' from_pretrained on the same
    directory for comparison."""
    ours = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as data:
            env = dict(os.environ, MUSIC_GEN_MODEL=checkpoint, MODEL_DEVICE="cpu", RUST_LOG="info", NO_COLOR="1")
            start = time.monotonic()
            proc = subprocess.Popen(
                [binary, "worker", "--backend", "embedded", "--family", "music", "--data-dir", data],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for line in proc.stderr:
                if "worker started" in line:
                    ours.append(time.monotonic() - start)
                    break
            proc.terminate()
            proc.wait(timeout=60)
    theirs = []
    if python:
        code = (
            "import time,sys;t=time.monotonic();"
            "from transformers import MusicgenForConditionalGeneration as M;"
            "t1=time.monotonic();M.from_pretrained(sys.argv[1]);print(time.monotonic()-t1)"
        )
        for _ in range(runs):
            out = subprocess.run([python, "-c", code, checkpoint], capture_output=True, text=True, check=True)
            theirs.append(float(out.stdout.strip().splitlines()[-1]))
    return ours, theirs


# ---------------------------------------------------------------------------


SETTINGS = [
    # name, max batch, target backlog per task, idle minutes, min tasks,
    # denominator of the backlog per task, warm pool
    ("A: batch 8, target 8, idle 10", 8, 8, 10, 0, "running", False),
    ("B: batch 16, target 16, idle 5", 16, 16, 5, 0, "running", False),
    ("C: batch 16, target 16, idle 10", 16, 16, 10, 0, "running", False),
    ("D: batch 16, target 16, idle 30", 16, 16, 30, 0, "running", False),
    ("E: batch 16, target 32, idle 10", 16, 32, 10, 0, "running", False),
    ("F: batch 16, target 8, idle 10", 16, 8, 10, 0, "running", False),
    ("G: as C, min 1", 16, 16, 10, 1, "running", False),
    ("H: as C, divided by desired tasks", 16, 16, 10, 0, "desired", False),
    ("I: as C, warm pool", 16, 16, 10, 0, "running", True),
    ("J: as D, warm pool", 16, 16, 30, 0, "running", True),
    ("K: batch 32, target 32, idle 10, warm pool", 32, 32, 10, 0, "running", True),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default=INPUTS)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--load", type=float, default=10.0, help="scales the day-time rate (load x 1..2 tasks/min) and the bursts (load x 15..40 tasks/min)")
    parser.add_argument("--max-tasks", type=int, default=4)
    parser.add_argument("--settings", default="", help="comma-separated letters of SETTINGS to run (default all)")
    parser.add_argument("--p95-goal", type=float, default=60.0, help="p95 queue wait (s) the fixed fleet is sized to meet")
    parser.add_argument("--families", default="music,audio")
    parser.add_argument("--measure-load", metavar="CHECKPOINT_DIR")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sound-creator"))
    parser.add_argument("--python", default="", help="a python with transformers, to time from_pretrained too")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with open(args.inputs) as f:
        inputs = json.load(f)

    if args.measure_load:
        ours, theirs = measure_load(args.measure_load, args.binary, args.runs, args.python)
        size = sum(
            os.path.getsize(os.path.join(args.measure_load, n)) for n in os.listdir(args.measure_load)
        ) / 1e9
        print(f"checkpoint {args.measure_load}: {size:.2f} GB")
        print(f"ours ({args.binary}): " + ", ".join(f"{x:.2f}" for x in ours) + " s")
        if theirs:
            print("transformers from_pretrained: " + ", ".join(f"{x:.2f}" for x in theirs) + " s")
        best = round(statistics.median(ours), 1)
        inputs["cold_start"]["model_load_s"]["music"] = best
        # No audiogen checkpoint is made here: its load is scaled by weight
        # bytes (audiogen-medium ~1.5 B parameters vs musicgen-small ~0.59 B).
        inputs["cold_start"]["model_load_s"]["audio"] = round(best * 1.5 / 0.59, 1)
        inputs["cold_start"]["model_load_source"] = (
            f"MEASURED for music: median of {len(ours)} runs of `sound-creator worker` from spawn to 'worker started' "
            f"on a random-weight musicgen-small checkpoint ({size:.2f} GB, made by "
            "tests/fixtures/make_musicgen_fixture.py --bench-small with transformers), CPU device, warm page cache; "
            "audio scaled by weight bytes (1.5 B / 0.59 B parameters), not measured"
        )
        with open(args.inputs, "w") as f:
            json.dump(inputs, f, indent=2)
            f.write("\n")
        print(f"recorded in {args.inputs}")
        return

    cold = inputs["cold_start"]
    print(f"throughput: {inputs['throughput']['gpu']} ({inputs['throughput']['source']})")
    print(
        "cold start: capacity provider {capacity_provider_reaction_s} s + boot {instance_boot_s} s + image {image_pull_s} s "
        "+ model download {model_download_s} s + container {container_start_s} s + model load {model_load_s} s".format(**cold)
    )
    print(
        f"trace: {args.days} days, load {args.load}; max tasks: at least the fixed fleet's, {args.max_tasks} or more; "
        f"price ${inputs['price']['gpu_hour_usd']}/GPU-hour"
    )
    print()
    rows = []
    for family in args.families.split(","):
        jobs, bursts = arrivals(family, args.days, load=args.load)
        fam = inputs["throughput"]["families"][family]
        print(
            f"{family}: {len(jobs)} jobs, {len(bursts)} bursts; one worker does "
            + ", ".join(f"{b / batch_seconds(fam, [10] * b):.2f}" for b in (1, 8, 16, 32))
            + " 10 s clips/s at batch 1, 8, 16, 32"
        )
        # The fixed fleet per batch size: the smallest always-on fleet whose
        # p95 wait meets the goal (the wait falls as the fleet grows).
        fixed = {}
        for batch in sorted({row[1] for row in SETTINGS}):
            lo, hi, found = 1, 64, None
            while lo <= hi:
                n = (lo + hi) // 2
                waits, gpu_h, _ = simulate(family, jobs, inputs, {"max_batch": batch}, fixed=n)
                if percentile(waits, 0.95) <= args.p95_goal:
                    found, hi = (n, waits, gpu_h), n - 1
                else:
                    lo = n + 1
            n, waits, gpu_h = found
            cost = gpu_h * inputs["price"]["gpu_hour_usd"]
            fixed[batch] = (n, cost)
            rows.append((family, f"fixed fleet of {n}, batch {batch} (sized for the peak)", waits, gpu_h, cost, cost))
        for name, batch, target, idle, minimum, denominator, warm_pool in SETTINGS:
            if args.settings and name.split(":")[0] not in args.settings.split(","):
                continue
            fixed_n, fixed_cost = fixed[batch]
            policy = {
                "target": target,
                "idle_minutes": idle,
                "min": minimum,
                "max": max(args.max_tasks, fixed_n),
                "max_batch": batch,
                "denominator": denominator,
                "warm_pool": warm_pool,
            }
            waits, gpu_h, storage_usd = simulate(family, jobs, inputs, policy)
            cost = gpu_h * inputs["price"]["gpu_hour_usd"] + storage_usd
            rows.append((family, name, waits, gpu_h, cost, fixed_cost))
    print()
    print("| family | setting | p50 wait (s) | p95 wait (s) | max wait (s) | GPU-hours / week | cost / week | vs fixed |")
    print("|---|---|---|---|---|---|---|---|")
    for family, name, waits, gpu_h, cost, fixed_cost in rows:
        print(
            f"| {family} | {name} | {percentile(waits, 0.5):.1f} | {percentile(waits, 0.95):.1f} | {max(waits):.0f} "
            f"| {gpu_h:.1f} | ${cost:.0f} | {cost / fixed_cost:.0%} |"
        )


if __name__ == "__main__":
    main()
