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
    raise SystemExit(f"unknown scale {scale!r} (small, medium, mini, audiogen-medium, audiogen-mini)")


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


# AudioGen at its published scale (audiogen-medium: t5-large, 48 x 1536
# decoder with 24 heads over 4 x 2048 codes, EnCodec 16 kHz), or a few layers
# of it ("audiogen-mini", for running the harness on a CPU). audiocraft
# cannot be installed on the GPU machine (no network), so the reference for
# these rows is transformers' MusicGen with exactly AudioGen's shapes and the
# same random weights: a proxy, and the table says so.
AUDIOGEN_SCALES = {
    "audiogen-medium": dict(dim=1536, heads=24, layers=48, card=2048, filters=64, codec_dim=128, t5="large"),
    "audiogen-mini": dict(dim=256, heads=8, layers=4, card=256, filters=4, codec_dim=32, t5="mini"),
}


def audiogen_proxy_config(scale):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    s = AUDIOGEN_SCALES[scale]
    if s["t5"] == "large":
        text = T5Config(vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16, feed_forward_proj="relu")
    else:
        text = T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, feed_forward_proj="relu")
    nbits = (s["card"] - 1).bit_length()
    audio = EncodecConfig(
        sampling_rate=16000,
        audio_channels=1,
        normalize=False,
        hidden_size=s["codec_dim"],
        num_filters=s["filters"],
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2],
        norm_type="weight_norm",
        use_causal_conv=False,
        pad_mode="constant",
        codebook_size=s["card"],
        codebook_dim=s["codec_dim"],
        use_conv_shortcut=False,
        target_bandwidths=[4.5 * 50 * nbits / 1000],
        num_lstm_layers=2,
        compress=2,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=s["card"],
        max_position_embeddings=2048,
        num_hidden_layers=s["layers"],
        ffn_dim=4 * s["dim"],
        num_attention_heads=s["heads"],
        hidden_size=s["dim"],
        num_codebooks=4,
        pad_token_id=s["card"],
        bos_token_id=s["card"],
    )
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())


def set_yaml(yaml, section, key, value):
    """Sets `section.key` in an OmegaConf YAML dump (two-space indents)."""
    out, current, done = [], None, False
    for line in yaml.splitlines():
        if line and not line.startswith(" "):
            current = line.split(":")[0]
        if current == section and line.startswith(f"  {key}:"):
            line, done = f"  {key}: {value}", True
        out.append(line)
    assert done, f"{section}.{key} not in xp.cfg"
    return "\n".join(out) + "\n"


def make_audiogen_checkpoint(fx, scale, out, device):
    """Random weights at AudioGen's shapes, written in AudioCraft's own export
    format (state_dict.bin + compression_state_dict.bin, torch pickles with
    xp.cfg; the tiny fixture's xp.cfg with the sizes changed) plus t5/ in the
    Hugging Face layout; returns the transformers proxy holding the same
    values (bf16, on `device`)."""
    from transformers import MusicgenForConditionalGeneration

    s = AUDIOGEN_SCALES[scale]
    cfg = audiogen_proxy_config(scale)
    torch.manual_seed(SEED)
    with torch.device(device):
        model = MusicgenForConditionalGeneration(cfg)
    model.eval()
    with torch.no_grad():
        for head in model.decoder.lm_heads:
            head.weight.mul_(8.0)
        model.enc_to_dec_proj.weight.mul_(6.0)
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
    model = model.to(torch.bfloat16)
    os.makedirs(out, exist_ok=True)
    tiny = os.path.join(ROOT, "tests", "fixtures", "tiny-audiogen")

    dec = {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()}
    lm = {}
    for i in range(s["layers"]):
        src, dst = f"model.decoder.layers.{i}", f"transformer.layers.{i}"
        for ours, theirs in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            lm[f"{dst}.{theirs}.in_proj_weight"] = torch.cat([dec[f"{src}.{ours}.{p}_proj.weight"] for p in "qkv"])
            lm[f"{dst}.{theirs}.out_proj.weight"] = dec[f"{src}.{ours}.out_proj.weight"]
        for ours, theirs in (
            ("self_attn_layer_norm", "norm1"),
            ("encoder_attn_layer_norm", "norm_cross"),
            ("final_layer_norm", "norm2"),
        ):
            for p in ("weight", "bias"):
                lm[f"{dst}.{theirs}.{p}"] = dec[f"{src}.{ours}.{p}"]
        lm[f"{dst}.linear1.weight"] = dec[f"{src}.fc1.weight"]
        lm[f"{dst}.linear2.weight"] = dec[f"{src}.fc2.weight"]
    for k in range(4):
        lm[f"emb.{k}.weight"] = dec[f"model.decoder.embed_tokens.{k}.weight"]
        lm[f"linears.{k}.weight"] = dec[f"lm_heads.{k}.weight"]
    for p in ("weight", "bias"):
        lm[f"out_norm.{p}"] = dec[f"model.decoder.layer_norm.{p}"]
        lm[f"condition_provider.conditioners.description.output_proj.{p}"] = getattr(model.enc_to_dec_proj, p).detach().cpu()
    lm = {k: v.half().contiguous() for k, v in lm.items()}  # the published LM file is float16

    codec = {}
    for name, value in model.audio_encoder.state_dict().items():
        value = value.detach().cpu().float().contiguous()
        if name.startswith("quantizer.layers.") and name.endswith(".codebook.embed"):
            q = name.split(".")[2]
            codec[f"quantizer.vq.layers.{q}._codebook.embed"] = value
            continue
        if not name.startswith("decoder.layers."):
            continue
        name = name.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        )
        parts = name.split(".")
        index, rest = parts[2], parts[3:]
        layer = model.audio_encoder.decoder.layers[int(index)]
        if rest[0] == "conv":
            wrap = "convtr.convtr" if "Transpose" in type(layer).__name__ else "conv.conv"
            codec[f"decoder.model.{index}.{wrap}.{'.'.join(rest[1:])}"] = value
        elif rest[0] == "block":
            codec[f"decoder.model.{index}.block.{rest[1]}.conv.conv.{'.'.join(rest[3:])}"] = value
        else:  # lstm
            codec[f"decoder.model.{index}.{'.'.join(rest)}"] = value

    lm_cfg = torch.load(os.path.join(tiny, "state_dict.bin"), map_location="cpu", weights_only=False)["xp.cfg"]
    for key, value in (("dim", s["dim"]), ("num_heads", s["heads"]), ("num_layers", s["layers"]), ("card", s["card"])):
        lm_cfg = set_yaml(lm_cfg, "transformer_lm", key, value)
    codec_cfg = torch.load(os.path.join(tiny, "compression_state_dict.bin"), map_location="cpu", weights_only=False)["xp.cfg"]
    codec_cfg = set_yaml(codec_cfg, "seanet", "n_filters", s["filters"])
    codec_cfg = set_yaml(codec_cfg, "seanet", "dimension", s["codec_dim"])
    codec_cfg = set_yaml(codec_cfg, "rvq", "bins", s["card"])
    for file, state, yaml in (("state_dict.bin", lm, lm_cfg), ("compression_state_dict.bin", codec, codec_cfg)):
        torch.save({"best_state": state, "xp.cfg": yaml, "version": "1.3.0", "exported": True}, os.path.join(out, file))
    t5_dir = os.path.join(out, "t5")
    model.text_encoder.float().save_pretrained(t5_dir, safe_serialization=True)
    model.text_encoder.to(torch.bfloat16)
    fx.train_tokenizer(200).save(os.path.join(t5_dir, "tokenizer.json"))
    # transformers' side reads the tokenizer from the model directory.
    fx.train_tokenizer(200).save(os.path.join(out, "tokenizer.json"))
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
    parser.add_argument("--scales", help="comma-separated: small, medium, mini, audiogen-medium, audiogen-mini")
    parser.add_argument("--dtypes", help="comma-separated: f32, f16, bf16")
    parser.add_argument("--batches", help="comma-separated batch sizes")
    parser.add_argument("--clips", default="2,10", help="the two clip lengths (s) per-step time is differenced from")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of ours per point (the best is kept)")
    parser.add_argument("--budget-s", type=float, default=285.0, help="transformers runs stop before this wall time")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "sound-creator-gpu-bench"))
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT") or os.path.join(ROOT, "bench", "out"), "gpu_bench.json"))
    args = parser.parse_args()

    scales = (args.scales or ("small" if args.quick else "small,medium,audiogen-medium")).split(",")
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
        if scale in AUDIOGEN_SCALES:
            dirs[scale] = os.path.join(args.work, f"{scale}-random")
            log(f"making the {scale} checkpoint (AudioCraft export format) in {dirs[scale]}")
            models[scale] = make_audiogen_checkpoint(fx, scale, dirs[scale], device)
            continue
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
    # AudioGen rows have no greedy parity here: their reference is a proxy
    # whose conditioning differs (audiocraft's is checked by the CPU tests).
    first = next((sc for sc in scales if sc not in AUDIOGEN_SCALES), None)
    if first is None:
        first = scales[0]
    log(f"parity on {first}")
    hf_first = models[first].float()
    prompts2 = PROMPTS[:2]
    parity_frames = 100
    if first not in AUDIOGEN_SCALES:
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
        guess = estimate_ms[scale] or (25.0 if "medium" in scale else 12.0)
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
    if any(sc in AUDIOGEN_SCALES for sc in scales):
        print(
            "audiogen-* rows: ours runs AudioGen from AudioCraft's export format; the transformers column is "
            "MusicGen with AudioGen's shapes and the same weights, a proxy (audiocraft cannot be installed here)"
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
