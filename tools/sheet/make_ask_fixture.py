#!/usr/bin/env python3
"""A tiny random RWKV-6 model with a byte-level tokenizer, to run `goldcrest sheet ask` end to end.

The model is tests/fixtures/rwkv6/tiny_a.safetensors (random weights, see that directory's
README) with its 96-row embedding and head replaced by 257-row random ones (numpy PCG64, seed 3,
same scale as tiny_a's rows), and an embedded RWKV World vocabulary that holds only the 256
single bytes (ids 1..256; id 0 is the end-of-text id World models use). Any text encodes, one
token per byte, so the whole Chain-of-Spreadsheet pipeline runs; the answers are noise, by
construction. It tests the pipeline, not a model.

    /work/venv-torch/bin/python tools/sheet/make_ask_fixture.py   # numpy==2.4.6 safetensors==0.8.0

writes tests/fixtures/sheets/tiny_rwkv6_bytes.safetensors.
"""
import json
import pathlib
import struct

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "tests/fixtures/rwkv6/tiny_a.safetensors"
DST = ROOT / "tests/fixtures/sheets/tiny_rwkv6_bytes.safetensors"
VOCAB = 257


def world_literal(b: int) -> str:
    return f"b'\\x{b:02x}'"


def main():
    tensors = load_file(SRC)
    n = struct.unpack("<Q", SRC.read_bytes()[:8])[0]
    meta = json.loads(SRC.read_bytes()[8 : 8 + n])["__metadata__"]
    rng = np.random.Generator(np.random.PCG64(3))
    for name in ("emb.weight", "head.weight"):
        old = tensors[name].astype(np.float32)
        scale = float(old.std())
        tensors[name] = (rng.standard_normal((VOCAB, old.shape[1])) * scale).astype(np.float16)
    vocab = "".join(f"{b + 1} {world_literal(b)} 1\n" for b in range(256))
    tensors["tokenizer"] = np.frombuffer(vocab.encode(), dtype=np.uint8).copy()
    meta["goldcrest.rwkv6.vocab_size"] = str(VOCAB)
    meta["goldcrest.tokenizer"] = "world"
    meta["generated_by"] = "tools/sheet/make_ask_fixture.py (numpy==2.4.6, safetensors==0.8.0, seed 3) from " + meta["generated_by"]
    save_file(tensors, DST, metadata=meta)
    print(f"wrote {DST} ({DST.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
