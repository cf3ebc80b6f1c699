#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/ from the tiny
AudioGen fixture and a few small torch.save files, so each target starts
from valid inputs of every shape it parses.

Usage: /path/to/.venv/bin/python fuzz/make_seeds.py   (needs torch)
"""
import collections
import io
import os
import pickle
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "tiny-audiogen")


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pkl_of(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def main():
    for f in ("state_dict.bin", "compression_state_dict.bin", "reader/varieties.bin"):
        data = pkl_of(os.path.join(FIXTURE, f))
        out("torch_pickle", os.path.basename(f) + ".pkl", data)
    for proto in (0, 2, 4, 5):
        value = {"a": [1, -1, 2**40, 2**70, 1.5, None, True, "é", b"\x00\xff"], "t": (1, (2,)), "s": {1, 2}}
        out("torch_pickle", f"python_proto{proto}.pkl", pickle.dumps(value, protocol=proto))
    shared = [1, 2]
    out("torch_pickle", "shared.pkl", pickle.dumps([shared, shared, collections.OrderedDict(k=shared)], protocol=2))

    small = io.BytesIO()
    torch.save({"best_state": {"model": torch.nn.Linear(2, 3).state_dict()}, "xp.cfg": "a: 1\n"}, small)
    out("torch_archive", "small_nested.bin", small.getvalue())
    small = io.BytesIO()
    base = torch.arange(6, dtype=torch.float16)
    torch.save({"best_state": {"v": base[1:5].view(2, 2), "t": base.view(2, 3).t(), "b": torch.tensor([True])}}, small)
    out("torch_archive", "small_views.bin", small.getvalue())
    with open(os.path.join(FIXTURE, "reader", "varieties.bin"), "rb") as f:
        out("torch_archive", "varieties.bin", f.read())

    for f in ("state_dict.bin", "compression_state_dict.bin"):
        pkg = torch.load(os.path.join(FIXTURE, f), map_location="cpu")
        out("xp_cfg", f.replace(".bin", ".yaml"), pkg["xp.cfg"].encode())
    out("xp_cfg", "interpolations.yaml", b"a: 1\nb: ${a}\nc:\n  d: ${.e}\n  e: x${a}y\n  f: ${..a}\ng: ${oc.env:USER}\n")


if __name__ == "__main__":
    main()
