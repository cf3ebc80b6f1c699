#!/usr/bin/env python3
"""The independent decoder of the audio crate's format tests: reads an audio
file with Python's soundfile (libsndfile, with its own FLAC, MPEG and Vorbis
decoders), prints what it found as one JSON line, and writes the decoded
samples, interleaved float32 little-endian, to OUT.

Usage: python soundfile_probe.py FILE OUT
"""

import json
import sys

import soundfile


def main():
    path, out = sys.argv[1], sys.argv[2]
    info = soundfile.info(path)
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    data.astype("<f4").tofile(out)
    print(json.dumps({
        "sample_rate": rate,
        "channels": data.shape[1],
        "frames": data.shape[0],
        "format": info.format,
        "subtype": info.subtype,
        "libsndfile": soundfile.__libsndfile_version__,
    }))


if __name__ == "__main__":
    main()
