#!/usr/bin/env python3
"""The GPU benchmark, in one command: our `musicgen-bench` binary (built
beforehand on another machine) against Hugging Face `transformers`
`MusicgenForConditionalGeneration.generate` on the same GPU, in the same run,
on the same random weights. Needs only what the GPU machine has: python3 with
torch and transformers; no Rust, no network. See bench/gpu/README.md.

What it does, in this order:
 1. makes random-weight checkpoints with transformers, in the published
    layout: musicgen-small (t5-base, 24 x 1024 decoder, EnCodec 32 kHz) and
    a medium-scale one (48 x 1536), saved in bf16 so that both sides load
    the same values whatever dtype they run in;
 2. checks greedy parity on the device: ours (CUDA graphs, then eager) on the
    committed tiny fixture against its recorded reference and against
    transformers run here, and ours against transformers on musicgen-small;
 3. times ours for every dtype, batch and clip length (one process per
    model), then transformers in priority order while the time budget lasts
    (what is skipped is printed as skipped);
 4. prints one table and writes every number as JSON.

Per-step time is taken by differencing two clip lengths (2 s and 10 s):
(t10 - t2) / (steps10 - steps2), which cancels the text encoder, setup and
most of EnCodec. "x real time" is the 10 s clip's audio length over its
whole generation time (text encoder, decoding and EnCodec).

Usage (from the repository root):
  python3 bench/gpu/run.py --bin .gpu-carry/musicgen-bench          # full, < 5 min on an H200
  python3 bench/gpu/run.py --bin .gpu-carry/musicgen-bench --quick  # small only, f32/bf16, batch 1/8
  python3 bench/gpu/run.py --bin target/release/musicgen-bench --quick --device cpu --scales mini \\
      --clips 0.5,1 --batches 1,2                                 # the harness itself, on a CPU
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny-musicgen")
PROMPTS = [
    "lo-fi hip hop beat with warm piano chords",
    "epic orchestral music with choir",
    "dark techno bassline at 128 bpm",
    "calm acoustic guitar melody",
]
SEED = 20240611
STARTED = time.perf_counter()


def elapsed():
    return time.perf_counter() - STARTED


def log(message):
    print(f"[{elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)


def load_fixture_module():
    """The fixture script's configs, tokenizer and published-layout saver."""
    path = os.path.join(ROOT, "tests", "fixtures", "make_musicgen_fixture.py")
    spec = importlib.util.spec_from_file_location("make_musicgen_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scale_config(fx, scale):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    if scale == "small":
        return fx.small_config()
    base = fx.small_config()
    if scale == "medium":
        decoder = MusicgenDecoderConfig(
            vocab_size=2048,
            max_position_embeddings=2048,
            num_hidden_layers=48,
            ffn_dim=6144,
            num_attention_heads=24,
            hidden_size=1536,
            num_codebooks=4,
            pad_token_id=2048,
            bos_token_id=2048,
        )
        return MusicgenConfig(
            text_encoder=base.text_encoder.to_dict(), audio_encoder=base.audio_encoder.to_dict(), decoder=decoder.to_dict()
        )
    if scale == "mini":
        # A few layers of everything: for running this harness on a CPU.
        text = T5Config(
            vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, feed_forward_proj="relu"
        )
        audio = EncodecConfig(
            sampling_rate=32000,
            audio_channels=1,
            normalize=False,
            hidden_size=32,
            num_filters=4,
            num_residual_layers=1,
            upsampling_ratios=[8, 5, 4, 4],
            norm_type="weight_norm",
            use_causal_conv=False,
            codebook_size=256,
            codebook_dim=32,
            use_conv_shortcut=False,
            target_bandwidths=[1.6],
            num_lstm_layers=2,
            compress=2,
        )
        decoder = MusicgenDecoderConfig(
            vocab_size=256,
            max_position_embeddings=2048,
            num_hidden_layers=4,
            ffn_dim=1024,
            num_attention_heads=8,
            hidden_size=256,
            num_codebooks=4,
            pad_token_id=256,
            bos_token_id=256,
        )
        return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    raise SystemExit(f"unknown scale {scale!r} (small, medium, mini)")


def make_checkpoint(fx, scale, out, device):
    """Random weights in the published layout, saved in bf16; returns the
    model (bf16, on `device`) holding exactly the saved values."""
    from transformers import MusicgenForConditionalGeneration

    cfg = scale_config(fx, scale)
    torch.manual_seed(SEED)
    with torch.device(device):
        model = MusicgenForConditionalGeneration(cfg)
    model.eval()
    with torch.no_grad():
        # As the tiny fixture: clear winners for greedy decoding, text that
        # matters, and EnCodec codebooks that are not all zeros.
        for head in model.decoder.lm_heads:
            head.weight.mul_(8.0)
        if model.enc_to_dec_proj is not None:
            model.enc_to_dec_proj.weight.mul_(6.0)
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
    model = model.to(torch.bfloat16)
    os.makedirs(out, exist_ok=True)
    fx.save_published_layout(model, out)
    fx.train_tokenizer(200).save(os.path.join(out, "tokenizer.json"))
    fx.write_tokenizer_config(out)
    return model


def tokenizer(model_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


class Ours:
    """Runs the musicgen-bench binary with that machine's libtorch."""

    def __init__(self, binary, device):
        self.binary = os.path.abspath(binary)
        self.device = device
        self.warnings = []
        torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = torch_lib + (
            ":" + self.env["LD_LIBRARY_PATH"] if self.env.get("LD_LIBRARY_PATH") else ""
        )

    def run(self, *args, timeout=600):
        cmd = [self.binary, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        for line in done.stderr.splitlines():
            if "WARN" in line or "ERROR" in line:
                self.warnings.append(line.strip()[:300])
                log(f"ours: {line.strip()[:300]}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    def codes(self, model_dir, prompts, frames, graphs=True):
        args = ["codes", "--model", model_dir, "--device", self.device, "--dtype", "f32", "--frames", str(frames)]
        for p in prompts:
            args += ["--prompt", p]
        if not graphs:
            args.append("--no-cuda-graphs")
        out = self.run(*args)[-1]
        return torch.tensor(out["codes"]), out

    def time(self, model_dir, dtypes, batches, clips, runs, graphs=True):
        args = [
            "time",
            "--model",
            model_dir,
            "--device",
            self.device,
            "--dtype",
            ",".join(dtypes),
            "--batch",
            ",".join(str(b) for b in batches),
            "--seconds",
            ",".join(str(c) for c in clips),
            "--runs",
            str(runs),
        ]
        if not graphs:
            args.append("--no-cuda-graphs")
        return self.run(*args)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_greedy_codes(model, tok, prompts, frames, device):
    """Greedy guided codes from transformers, captured where generate hands
    them to EnCodec (delay pattern removed): [batch, codebooks, frames]."""
    inputs = tok(prompts, return_tensors="pt", padding=True).to(device)
    captured = {}
    original = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured["codes"] = codes.clone()
        return original(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    try:
        with torch.no_grad():
            model.generate(
                **inputs,
                do_sample=False,
                guidance_scale=3.0,
                max_new_tokens=frames + model.config.decoder.num_codebooks - 1,
            )
    finally:
        model.audio_encoder.decode = original
    return captured["codes"][0].cpu()


def hf_generate_seconds(model, tok, batch, seconds, device):
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    inputs = tok(prompts, return_tensors="pt", padding=True).to(device)
    frames = int(-(-seconds * model.config.audio_encoder.frame_rate // 1))  # ceil, as ours
    steps = frames + model.config.decoder.num_codebooks - 1
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        audio = model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps)
    sync(device)
    total = time.perf_counter() - start
    assert audio.shape[-1] > 0
    return total, steps


def agreement(a, b):
    if a.shape != b.shape:
        return {"same": 0, "total": int(max(a.numel(), b.numel())), "note": f"shapes {list(a.shape)} vs {list(b.shape)}"}
    return {"same": int((a == b).sum()), "total": int(a.numel())}


def per_step(short, long):
    """ms per step from two (seconds of wall time, steps) runs."""
    (t_short, s_short), (t_long, s_long) = short, long
    return (t_long - t_short) / (s_long - s_short) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, ".gpu-carry", "musicgen-bench"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small only, f32 and bf16, batch 1 and 8")
    parser.add_argument("--scales", help="comma-separated: small, medium, mini")
    parser.add_argument("--dtypes", help="comma-separated: f32, f16, bf16")
    parser.add_argument("--batches", help="comma-separated batch sizes")
    parser.add_argument("--clips", default="2,10", help="the two clip lengths (s) per-step time is differenced from")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of ours per point (the best is kept)")
    parser.add_argument("--budget-s", type=float, default=285.0, help="transformers runs stop before this wall time")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "sound-creator-gpu-bench"))
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT") or os.path.join(ROOT, "bench", "out"), "gpu_bench.json"))
    args = parser.parse_args()

    scales = (args.scales or ("small" if args.quick else "small,medium")).split(",")
    dtypes = (args.dtypes or ("f32,bf16" if args.quick else "f32,f16,bf16")).split(",")
    batches = [int(b) for b in (args.batches or ("1,8" if args.quick else "1,8,32")).split(",")]
    clips = [float(c) for c in args.clips.split(",")]
    assert len(clips) == 2 and clips[0] < clips[1], "--clips takes two lengths, shorter first"
    device = args.device
    if device.startswith("cuda"):
        assert torch.cuda.is_available(), "this machine's torch sees no CUDA device"
    else:
        # On a shared CPU, several OpenMP threads wait on each other at every
        # small op (bench/RESULTS.md): the reference is fastest on one.
        torch.set_num_threads(1)
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: build musicgen-bench first (bench/gpu/README.md)")

    import transformers

    env = {
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scales": scales,
        "dtypes": dtypes,
        "batches": batches,
        "clips": clips,
    }
    log(f"{env['gpu']}, torch {env['torch']}, transformers {env['transformers']}")
    fx = load_fixture_module()
    ours = Ours(args.bin, device)
    result = {"env": env, "parity": {}, "ours": {}, "transformers": {}, "skipped": []}
    dtype_of = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

    # 1. checkpoints
    models, dirs = {}, {}
    for scale in scales:
        dirs[scale] = os.path.join(args.work, f"musicgen-{scale}-random")
        log(f"making the {scale} checkpoint in {dirs[scale]}")
        models[scale] = make_checkpoint(fx, scale, dirs[scale], device)

    # 2. parity (greedy, guidance 3, f32)
    from safetensors.torch import load_file
    from transformers import MusicgenForConditionalGeneration

    reference = load_file(os.path.join(TINY, "reference", "reference.safetensors"))
    tiny_prompts = json.load(open(os.path.join(TINY, "reference", "reference.json")))["prompts"]
    expected = reference["greedy_codes"]
    frames = expected.shape[-1]
    log("parity on the tiny fixture")
    tiny_hf = MusicgenForConditionalGeneration.from_pretrained(TINY).to(device).eval()
    hf_codes = hf_greedy_codes(tiny_hf, tokenizer(TINY), tiny_prompts, frames, device)
    del tiny_hf
    graphs_codes, graphs_info = ours.codes(TINY, tiny_prompts, frames, graphs=True)
    eager_codes, _ = ours.codes(TINY, tiny_prompts, frames, graphs=False)
    result["parity"]["tiny"] = {
        "step_mode": graphs_info.get("step_mode"),
        "ours_vs_recorded_reference": agreement(graphs_codes, expected),
        "ours_eager_vs_recorded_reference": agreement(eager_codes, expected),
        "ours_vs_transformers_here": agreement(graphs_codes, hf_codes),
        "transformers_here_vs_recorded_reference": agreement(hf_codes, expected),
    }
    first = scales[0]
    log(f"parity on {first}")
    hf_first = models[first].float()
    prompts2 = PROMPTS[:2]
    parity_frames = 100
    hf_codes = hf_greedy_codes(hf_first, tokenizer(dirs[first]), prompts2, parity_frames, device)
    ours_codes, _ = ours.codes(dirs[first], prompts2, parity_frames, graphs=True)
    result["parity"][first] = {"ours_vs_transformers_here": agreement(ours_codes, hf_codes)}
    models[first] = hf_first.to(torch.bfloat16)

    # 3. ours, every point
    for scale in scales:
        log(f"timing ours on {scale}: {dtypes} x batch {batches} x {clips} s")
        rows = ours.time(dirs[scale], dtypes, batches, clips, args.runs)
        result["ours"][scale] = rows
        if device.startswith("cuda") and scale == scales[0]:
            log(f"timing ours on {scale} without CUDA graphs (batch 1)")
            result["ours"][scale + "/eager"] = ours.time(dirs[scale], dtypes, [1], clips, args.runs, graphs=False)

    # 4. transformers, in priority order while the budget lasts
    jobs = []
    for batch in batches:
        for dtype in dtypes:
            for scale in scales:
                jobs.append((scale, dtype, batch))
    # batch 1 f32 first (the speed-up targets), then bf16, then the rest.
    rank = {"f32": 0, "bf16": 1, "f16": 2}
    jobs.sort(key=lambda j: (j[2] != 1, rank.get(j[1], 3), batches.index(j[2]), scales.index(j[0])))
    estimate_ms = {scale: None for scale in scales}
    for scale, dtype, batch in jobs:
        model = models[scale]
        steps_total = sum(int(-(-c * model.config.audio_encoder.frame_rate // 1)) + 3 for c in clips)
        guess = estimate_ms[scale] or (25.0 if scale == "medium" else 12.0)
        cost = guess * 1.3 * steps_total / 1e3 + 2.0
        if elapsed() + cost > args.budget_s:
            result["skipped"].append({"scale": scale, "dtype": dtype, "batch": batch, "estimated_s": round(cost, 1)})
            log(f"skipping transformers {scale} {dtype} batch {batch} (about {cost:.0f} s, budget {args.budget_s:.0f} s)")
            continue
        log(f"timing transformers {scale} {dtype} batch {batch}")
        runner = model.to(dtype_of[dtype])
        tok = tokenizer(dirs[scale])
        try:
            hf_generate_seconds(runner, tok, batch, 0.2, device)  # warm-up
            short = hf_generate_seconds(runner, tok, batch, clips[0], device)
            long = hf_generate_seconds(runner, tok, batch, clips[1], device)
            ms = per_step(short, long)
            estimate_ms[scale] = max(estimate_ms[scale] or 0.0, ms)
            result["transformers"].setdefault(scale, []).append(
                {
                    "dtype": dtype,
                    "batch": batch,
                    "short_s": short[0],
                    "long_s": long[0],
                    "steps": [short[1], long[1]],
                    "ms_per_step": ms,
                    "x_real_time": clips[1] / long[0],
                }
            )
        except Exception as err:  # e.g. NaNs from T5 in f16
            result["transformers"].setdefault(scale, []).append(
                {"dtype": dtype, "batch": batch, "error": str(err).splitlines()[0][:200]}
            )
        models[scale] = runner

    # 5. the table
    table = []
    for scale in scales:
        rows = result["ours"][scale]
        eager = result["ours"].get(scale + "/eager", [])
        for dtype in dtypes:
            for batch in batches:
                pick = {r["seconds"]: r for r in rows if r["dtype"] == dtype and r["batch"] == batch}
                if len(pick) < 2:
                    continue
                short, long = pick[clips[0]], pick[clips[1]]
                ours_ms = per_step((short["total_s"], short["steps"]), (long["total_s"], long["steps"]))
                eager_pick = {r["seconds"]: r for r in eager if r["dtype"] == dtype and r["batch"] == batch}
                eager_ms = (
                    per_step(
                        (eager_pick[clips[0]]["total_s"], eager_pick[clips[0]]["steps"]),
                        (eager_pick[clips[1]]["total_s"], eager_pick[clips[1]]["steps"]),
                    )
                    if len(eager_pick) == 2
                    else None
                )
                hf = next(
                    (h for h in result["transformers"].get(scale, []) if h["dtype"] == dtype and h["batch"] == batch),
                    None,
                )
                hf32 = next(
                    (h for h in result["transformers"].get(scale, []) if h["dtype"] == "f32" and h["batch"] == batch),
                    None,
                )
                table.append(
                    {
                        "scale": scale,
                        "dtype": dtype,
                        "batch": batch,
                        "ours_ms_per_step": ours_ms,
                        "ours_eager_ms_per_step": eager_ms,
                        "ours_x_real_time": batch * clips[1] / long["total_s"],
                        "hf_ms_per_step": hf and hf.get("ms_per_step"),
                        "hf_x_real_time": hf and hf.get("x_real_time") and batch * hf["x_real_time"],
                        "hf_error": hf and hf.get("error"),
                        "hf_f32_ms_per_step": hf32 and hf32.get("ms_per_step"),
                        "step_mode": long.get("step_mode"),
                    }
                )
    result["table"] = table
    result["ours_warnings"] = ours.warnings
    result["wall_s"] = elapsed()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

    def fmt(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    modes = sorted({row["step_mode"] for row in table if row["step_mode"]})
    print()
    print(
        f"{env['gpu']}; torch {env['torch']}, transformers {env['transformers']}; random weights, sampling top_k 250, "
        f"cfg 3; ms/step by differencing {clips[0]:g} s and {clips[1]:g} s clips; x real time = clips x {clips[1]:g} s "
        f"of audio / wall time of the {clips[1]:g} s generation; ours: {', '.join(modes)}"
    )
    for name, p in result["parity"].items():
        print(f"greedy parity {name}: " + "; ".join(f"{k} {v['same']}/{v['total']}" for k, v in p.items() if isinstance(v, dict)))
    print()
    print(
        "| model | dtype | batch | ours ms/step | ours eager ms/step | transformers ms/step | speed-up | "
        "vs transformers f32 | ours x real time | transformers x real time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        hf = row["hf_ms_per_step"]
        hf32 = row["hf_f32_ms_per_step"]
        print(
            f"| {row['scale']} | {row['dtype']} | {row['batch']} | {fmt(row['ours_ms_per_step'])} | "
            f"{fmt(row['ours_eager_ms_per_step'])} | {fmt(hf) if not row['hf_error'] else 'error'} | "
            f"{fmt(hf and hf / row['ours_ms_per_step'], '.1f')}{'x' if hf else ''} | "
            f"{fmt(hf32 and hf32 / row['ours_ms_per_step'], '.1f')}{'x' if hf32 else ''} | "
            f"{fmt(row['ours_x_real_time'], '.1f')} | {fmt(row['hf_x_real_time'], '.1f')} |"
        )
    if ours.warnings:
        print(f"ours warned {len(ours.warnings)} times, first: {ours.warnings[0]}")
    if result["skipped"]:
        print("transformers skipped for the time budget: " + ", ".join(f"{s['scale']} {s['dtype']} b{s['batch']}" for s in result["skipped"]))
    print(f"wall time {elapsed():.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
