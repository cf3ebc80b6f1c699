#!/usr/bin/env python3
"""The reference column of audio/examples/encode_bench.rs: how long
libsndfile (through soundfile: libFLAC, LAME, libvorbis) takes to encode the
same clip, and transformers' MusicgenMelodyFeatureExtractor to compute its
chroma (32 kHz mono clips only). Prints one JSON object of median
milliseconds (5 runs after a warm-up) and output sizes (`<format>_bytes`),
with null where a step is unavailable. libsndfile encodes with its own
default settings, not the audio crate's, so compare sizes along with times.

Usage: python bench/audio_reference_bench.py CLIP.wav
"""

import io
import json
import sys
import time

import soundfile

RUNS = 5
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}


def median_ms(run):
    run()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return sorted(times)[RUNS // 2]


def main():
    data, rate = soundfile.read(sys.argv[1], dtype="float32", always_2d=True)
    result = {"libsndfile": soundfile.__libsndfile_version__}
    for name, (fmt, subtype) in FORMATS.items():
        def run():
            out = io.BytesIO()
            soundfile.write(out, data, rate, format=fmt, subtype=subtype)
            result[name + "_bytes"] = len(out.getbuffer())
        try:
            result[name] = median_ms(run)
        except Exception:  # a libsndfile build without that format
            result[name] = None
            result[name + "_bytes"] = None
    result["chroma"] = None
    if rate == 32000 and data.shape[1] == 1:
        try:
            import torch

            torch.set_num_threads(1)
            from transformers import MusicgenMelodyFeatureExtractor

            extractor = MusicgenMelodyFeatureExtractor()
            mono = data[:, 0]
            result["chroma"] = median_ms(lambda: extractor(mono, sampling_rate=rate, return_tensors="pt"))
        except ImportError:
            pass
    print(json.dumps(result))


if __name__ == "__main__":
    main()
