"""The Rust side of the CPU benchmarks (bench/musicgen_bench.py,
bench/audiogen_bench.py): runs the release `musicgen-bench time` on a model
directory and reads its JSON row, so both benchmarks time this crate the
same way. Standard library only: it runs in either benchmark's venv.
"""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/musicgen-bench")


def load_average():
    return tuple(round(x, 2) for x in os.getloadavg())


def bench_ours(model_dir, dtype, runs, seconds):
    """ms per decoding step (the engine's step reports), total seconds and
    real-time factor of a `seconds` clip, best of `runs`."""
    load_before = load_average()
    out = subprocess.run(
        [BIN, "time", "--model", model_dir, "--dtype", dtype, "--seconds", str(seconds), "--runs", str(runs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return {
        "ms_per_step": row["ms_per_step_reported"],
        "total_s": row["total_s"],
        "rtf": row["total_s"] / seconds,
        "threads": f"1 + {row['gemv_threads']} gemv",
        "load": (load_before, load_average()),
    }
