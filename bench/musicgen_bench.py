#!/usr/bin/env python3
"""MusicGen decoding speed on the CPU: this crate (release `musicgen-bench`)
against Hugging Face `transformers` `MusicgenForConditionalGeneration.generate`
on the same random weights, same prompt and settings (sampling, top_k 250,
cfg 3, batch 1).

Scales:
  tiny   tests/fixtures/tiny-musicgen (the parity fixture), 2 s clip
  small  the real facebook/musicgen-small architecture (t5-base, 24 x 1024
         decoder, EnCodec 32 kHz) with random weights saved under bench/out,
         2 s clip, f32 and bf16 (ours) against transformers f32

transformers is timed with one intra-op thread and with one per core, after
an untimed warm-up generation, and the faster is reported (with its thread
count): on a machine whose cores other processes share, libtorch's OpenMP
threads wait on each other at every small op, which made the earlier
baseline 10-20x slower than the reference can run (see bench/RESULTS.md).
The load average is recorded around every row.

Also prints the memory-bandwidth floor of one small-model decoding step: the
bytes of decoder weights each step must read, divided by a measured copy
bandwidth.

Usage (from the repository root, after
`cargo build --release -p sound-creator-audiocraft --bin musicgen-bench`):
  python bench/musicgen_bench.py [--skip-small]
"""

import json
import os
import subprocess
import sys
import time

import torch
from ours import bench_ours, load_average  # bench/ours.py, beside this script
from transformers import LogitsProcessor, LogitsProcessorList, MusicgenForConditionalGeneration, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests/fixtures/tiny-musicgen")
SMALL = os.path.join(ROOT, "bench/out/musicgen-small-random")
PROMPT = "lo-fi hip hop beat with warm piano chords"
SECONDS = 2.0


class StepClock(LogitsProcessor):
    """Records the time of every decoding step."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def bench_transformers(model_dir, runs):
    model = MusicgenForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    inputs = tok([PROMPT], return_tensors="pt", padding=True)
    frames = int(SECONDS * model.config.audio_encoder.frame_rate)
    max_new = frames + model.config.decoder.num_codebooks - 1
    best = None
    by_threads = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        with torch.no_grad():  # first-call costs (allocator, oneDNN) stay out
            model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=8)
        for _ in range(runs):
            clock = StepClock()
            torch.manual_seed(1)
            load_before = load_average()
            start = time.perf_counter()
            with torch.no_grad():
                audio = model.generate(
                    **inputs,
                    do_sample=True,
                    top_k=250,
                    guidance_scale=3.0,
                    max_new_tokens=max_new,
                    logits_processor=LogitsProcessorList([clock]),
                )
            total = time.perf_counter() - start
            assert audio.shape[-1] > 0
            per_step = (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)
            by_threads[threads] = min(by_threads.get(threads, float("inf")), per_step * 1e3)
            if best is None or per_step < best["ms_per_step"] / 1e3:
                best = {
                    "ms_per_step": per_step * 1e3,
                    "total_s": total,
                    "rtf": total / SECONDS,
                    "threads": threads,
                    "load": (load_before, load_average()),
                }
    del model
    best["by_threads"] = by_threads
    return best


def copy_bandwidth_gbs():
    """Best of a few 512 MiB tensor copies; counts bytes read plus written."""
    n = 128 * 1024 * 1024
    a = torch.ones(n, dtype=torch.float32)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * 4 / best / 1e9


def step_weight_bytes(model_dir, bytes_per_param=4):
    """Decoder weights read per step: self-attention q/k/v/out, cross-attention
    q/out (its keys/values are computed once), the feed-forward, layer norms
    and the LM heads. Embeddings are gathered, not read whole."""
    with open(os.path.join(model_dir, "config.json")) as f:
        d = json.load(f)["decoder"]
    h, ffn, layers = d["hidden_size"], d["ffn_dim"], d["num_hidden_layers"]
    per_layer = 4 * h * h + 2 * h * h + 2 * h * ffn + 6 * h
    heads = d["num_codebooks"] * d["vocab_size"] * h
    return (layers * per_layer + heads) * bytes_per_param


def main():
    skip_small = "--skip-small" in sys.argv
    rows = []

    hf = bench_transformers(TINY, runs=3)
    ours = bench_ours(TINY, "f32", runs=3, seconds=SECONDS)
    rows.append(("tiny", "f32", ours, hf))

    floor = None
    if not skip_small:
        if not os.path.exists(os.path.join(SMALL, "model.safetensors")):
            subprocess.run(
                [sys.executable, os.path.join(ROOT, "tests/fixtures/make_musicgen_fixture.py"), "--bench-small", SMALL],
                check=True,
            )
        ours32 = bench_ours(SMALL, "f32", runs=2, seconds=SECONDS)
        ours16 = bench_ours(SMALL, "bf16", runs=2, seconds=SECONDS)
        hf_small = bench_transformers(SMALL, runs=1)
        rows.append(("small", "f32", ours32, hf_small))
        rows.append(("small", "bf16", ours16, hf_small))
        bandwidth = copy_bandwidth_gbs()
        weight_bytes = step_weight_bytes(SMALL)
        floor = (weight_bytes, bandwidth, weight_bytes / (bandwidth * 1e9) * 1e3)

    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, clip {SECONDS:.0f} s, batch 1, top_k 250, cfg 3")
    print()
    print(
        "| model | ours dtype | ours ms/step | transformers f32 ms/step | speed-up | ours RTF | transformers RTF "
        "| threads (ours; transformers) | load before/after (ours; transformers) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scale, dtype, ours, hf in rows:
        print(
            f"| {scale} | {dtype} | {ours['ms_per_step']:.2f} | {hf['ms_per_step']:.2f} | "
            f"{hf['ms_per_step'] / ours['ms_per_step']:.2f}x | {ours['rtf']:.2f} | {hf['rtf']:.2f} "
            f"| {ours['threads']}; {hf['threads']} "
            f"| {ours['load'][0][0]}/{ours['load'][1][0]}; {hf['load'][0][0]}/{hf['load'][1][0]} |"
        )
    print()
    for scale, _, _, hf in rows[:2]:
        print(
            f"transformers {scale} ms/step by intra-op threads: "
            + ", ".join(f"{t}: {ms:.2f}" for t, ms in sorted(hf["by_threads"].items()))
        )
    if floor:
        weight_bytes, bandwidth, floor_ms = floor
        print()
        print(
            f"small f32 bandwidth floor: {weight_bytes / 1e9:.2f} GB of weights per step / "
            f"{bandwidth:.1f} GB/s measured copy bandwidth = {floor_ms:.1f} ms/step; "
            f"ours f32 is {rows[1][2]['ms_per_step'] / floor_ms:.2f}x the floor"
        )


if __name__ == "__main__":
    main()
