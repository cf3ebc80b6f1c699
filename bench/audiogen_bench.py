#!/usr/bin/env python3
"""AudioGen decoding speed on the CPU: this crate (release `musicgen-bench`,
which recognises an AudioCraft export by its files) against audiocraft 1.3.0's
own `AudioGen.generate`, on the same files (tests/fixtures/tiny-audiogen:
the tiny random-weight AudioGen audiocraft's builders made and exported),
the same prompt and the published generation settings (sampling, top_k 250,
temperature 1, cfg 3), batch 1, a 2 s clip.

Both sides run on one intra-op thread per op as the Rust engine does on a
CPU (audiocraft is also timed with one thread per core; the faster is
reported), after an untimed warm-up generation; steps are timed between the
first and the last progress report (audiocraft's progress callback, the
engine's step reports). The load average is recorded around every row.

Runs in the audiocraft venv (audiocraft is installed there without its pins):
  cargo build --release -p sound-creator-audiocraft --bin musicgen-bench
  "$(bash tests/fixtures/setup_audiocraft_venv.sh)" bench/audiogen_bench.py
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_audiogen_fixture as fixture  # noqa: E402  (installs the audiocraft shim)

import torch  # noqa: E402
from ours import bench_ours, load_average  # noqa: E402  (bench/ours.py, beside this script)
from audiocraft.models import AudioGen, loaders  # noqa: E402

TINY = os.path.join(ROOT, "tests/fixtures/tiny-audiogen")
PROMPT = "lo-fi hip hop beat with warm piano chords"
SECONDS = 2.0


def bench_audiocraft(model_dir, runs):
    fixture.point_t5_large_at(os.path.join(model_dir, "t5"))
    lm = loaders.load_lm_model(model_dir, device="cpu")
    codec = loaders.load_compression_model(model_dir, device="cpu")
    model = AudioGen("bench", codec, lm)
    # audiocraft's top-k calls torch.topk, which fails past the vocabulary;
    # keeping every code is what top_k 250 means on the tiny fixture's 64.
    top_k = min(250, lm.card)
    times = []
    model.set_custom_progress_callback(lambda done, total: times.append(time.perf_counter()))
    best, by_threads = None, {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        model.set_generation_params(use_sampling=True, top_k=top_k, temperature=1.0, cfg_coef=3.0, duration=0.2)
        model.generate([PROMPT], progress=True)  # warm-up
        model.set_generation_params(use_sampling=True, top_k=top_k, temperature=1.0, cfg_coef=3.0, duration=SECONDS)
        for _ in range(runs):
            times.clear()
            torch.manual_seed(1)
            load_before = load_average()
            start = time.perf_counter()
            audio = model.generate([PROMPT], progress=True)
            total = time.perf_counter() - start
            assert audio.shape[-1] > 0
            per_step = (times[-1] - times[0]) / (len(times) - 1)
            by_threads[threads] = min(by_threads.get(threads, float("inf")), per_step * 1e3)
            if best is None or per_step * 1e3 < best["ms_per_step"]:
                best = {
                    "ms_per_step": per_step * 1e3,
                    "total_s": total,
                    "rtf": total / SECONDS,
                    "threads": threads,
                    "load": (load_before, load_average()),
                }
    best["by_threads"] = by_threads
    return best


def main():
    runs = 3
    ours = bench_ours(TINY, "f32", runs, seconds=SECONDS)
    ref = bench_audiocraft(TINY, runs)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, clip {SECONDS:.0f} s, batch 1, top_k 250, cfg 3")
    print()
    print(
        "| model | ours dtype | ours ms/step | audiocraft f32 ms/step | speed-up | ours RTF | audiocraft RTF "
        "| threads (ours; audiocraft) | load before/after (ours; audiocraft) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| tiny-audiogen | f32 | {ours['ms_per_step']:.2f} | {ref['ms_per_step']:.2f} | "
        f"{ref['ms_per_step'] / ours['ms_per_step']:.2f}x | {ours['rtf']:.2f} | {ref['rtf']:.2f} "
        f"| {ours['threads']}; {ref['threads']} "
        f"| {ours['load'][0][0]}/{ours['load'][1][0]}; {ref['load'][0][0]}/{ref['load'][1][0]} |"
    )
    print()
    print(
        "audiocraft ms/step by intra-op threads: "
        + ", ".join(f"{t}: {ms:.2f}" for t, ms in sorted(ref["by_threads"].items()))
    )


if __name__ == "__main__":
    main()
