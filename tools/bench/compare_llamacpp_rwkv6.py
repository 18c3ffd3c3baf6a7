#!/usr/bin/env python3
"""RWKV-6 side by side: goldcrest and llama.cpp on the same random ternary weights.

For each shape this script
  1. writes one random RWKV-6 x060 checkpoint in the official names and shapes
     (`blocks.N.att.time_maa_w1` ..., as `RWKV-x060-World-*.pth` after
     tools/rwkv6/pth_to_safetensors.py), f16; the eight linear layers of every block are
     ternary, one scale per tensor times {-1, 0, 1}, so tq2/tq1 hold them exactly,
  2. converts it with `goldcrest convert rwkv6 --weights FMT` for f16, q4 (the two timed beside
     llama.cpp) and tq2, tq1 (reference rows; llama.cpp has no RWKV path for TQ types here),
  3. writes the same tensors as a GGUF of llama.cpp's `rwkv6` architecture (own code: names,
     metadata and the layout changes listed in `write_rwkv6_gguf`), and quantizes it to Q4_0
     with llama.cpp's own quantizer (embedding and head kept F16, as in goldcrest),
  4. checks that llama.cpp's GGUF and goldcrest's file are the same model: logits after every
     position of a short prompt, max |difference| against the logits' spread; exactly (every
     matrix f32 on both sides, --f32-check-shapes) and for the timed F16 files (where llama.cpp
     rounds activations to f16 before each F16 product, so its logits move by a few percent of
     their spread; goldcrest's f16 file gives bit-identical logits to its f32 one),
  5. times llama.cpp (llama-cpp-python, one batch of --prompt-tokens, then --gen-tokens single
     decodes; warm-up + median) and `goldcrest bench --json` with the same settings, per thread
     count, each timed pair under --lock, and prints a markdown table with the roofline
     (weight bytes read per decoded token over --bandwidth) plus JSON lines.

Helpers (random safetensors writer, llama.cpp driver, quantizer call, timing) are shared with
compare_llamacpp.py, the decoder's comparison. Nothing from llama.cpp is copied: it is used as
an installed library, and the GGUF layout follows its documented tensor names and shapes.

Usage (the venv from `compare_llamacpp.py --install`):
    cargo build --release -p goldcrest-std
    /work/venv-llama/bin/python tools/bench/compare_llamacpp_rwkv6.py \
        --goldcrest target/release/goldcrest --shapes 12x768,24x2048 --threads 1,2 \
        --lock /work/wt/bench.lock
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_llamacpp import (  # noqa: E402
    GGML_TYPE_F16, bench_lock, goldcrest_logits, llamacpp_logits, quantize_gguf, read_hf,
    time_goldcrest, time_llamacpp, write_f16_safetensors,
)

LLAMA_FTYPE_MOSTLY_Q4_0 = 2
VOCAB = 65536  # the RWKV World vocabulary size
HEAD_SIZE = 64
# goldcrest --weights value -> the llama.cpp file it is timed beside (None: reference row).
FORMATS = [("f16", "F16"), ("q4", "Q4_0"), ("tq2", None), ("tq1", None)]


def config(shape: str) -> dict:
    """`LxC` -> the released models' derived sizes (dim_ffn, adapter ranks)."""
    n_layer, n_embd = (int(x) for x in shape.split("x"))
    return dict(
        n_layer=n_layer, n_embd=n_embd, head_size=HEAD_SIZE, vocab=VOCAB,
        dim_ffn=int(n_embd * 3.5) // 32 * 32,
        lora_mix=64 if n_embd == 4096 else 32,
        lora_decay=128 if n_embd == 4096 else 64,
    )


def rwkv6_tensors(cfg: dict):
    """(official name, shape, kind) of every tensor of an x060 checkpoint."""
    c, f, v = cfg["n_embd"], cfg["dim_ffn"], cfg["vocab"]
    h, n, dm, dd = c // cfg["head_size"], cfg["head_size"], cfg["lora_mix"], cfg["lora_decay"]
    out = [("emb.weight", (v, c), "emb"),
           ("blocks.0.ln0.weight", (c,), "ln_w"), ("blocks.0.ln0.bias", (c,), "ln_b")]
    for i in range(cfg["n_layer"]):
        b = f"blocks.{i}."
        for ln in ("ln1", "ln2", "att.ln_x"):
            out += [(b + ln + ".weight", (c,), "ln_w"), (b + ln + ".bias", (c,), "ln_b")]
        out += [(b + f"att.time_maa_{x}", (1, 1, c), "mix") for x in "xwkvrg"]
        out += [
            (b + "att.time_maa_w1", (c, 5 * dm), "lora_in"),
            (b + "att.time_maa_w2", (5, dm, c), "lora_out"),
            (b + "att.time_decay", (1, 1, c), "decay"),
            (b + "att.time_decay_w1", (c, dd), "lora_in"),
            (b + "att.time_decay_w2", (dd, c), "lora_out"),
            (b + "att.time_faaaa", (h, n), "bonus"),
        ]
        out += [(b + f"att.{m}.weight", (c, c), "linear")
                for m in ("receptance", "key", "value", "gate", "output")]
        out += [
            (b + "ffn.time_maa_k", (1, 1, c), "mix"),
            (b + "ffn.time_maa_r", (1, 1, c), "mix"),
            (b + "ffn.key.weight", (f, c), "linear"),
            (b + "ffn.receptance.weight", (c, c), "linear"),
            (b + "ffn.value.weight", (c, f), "linear"),
        ]
    out += [("ln_out.weight", (c,), "ln_w"), ("ln_out.bias", (c,), "ln_b"),
            ("head.weight", (v, c), "head")]
    return out


def random_rwkv6(np, rng, shape, kind):
    """Values of a plausible trained model's magnitude, so activations and logits stay O(1)."""
    if kind == "linear":
        # Ternary: one f16 scale per tensor (about 1/sqrt(fan-in) of the nonzero 2/3).
        scale = np.float16(1.0 / np.sqrt(shape[1] * 2.0 / 3.0))
        trits = rng.integers(-1, 2, size=shape, dtype=np.int8)
        return trits.astype(np.float16) * scale
    if kind == "emb":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "head":
        return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])
    if kind == "ln_w":
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if kind == "ln_b":
        return 0.05 * rng.standard_normal(shape)
    if kind == "mix":
        return rng.uniform(0.0, 1.0, shape)
    if kind == "lora_in":
        return rng.standard_normal(shape) * (0.5 / np.sqrt(shape[0]))
    if kind == "lora_out":
        return rng.standard_normal(shape) * (0.5 / np.sqrt(shape[-2]))
    if kind == "decay":  # log-log decay: per-token decay exp(-exp(w)) from ~1 down to ~0.5
        return rng.uniform(-6.0, -0.5, shape)
    if kind == "bonus":
        return rng.uniform(-0.5, 1.0, shape)
    raise ValueError(kind)


def write_rwkv6_gguf(np, gguf, cfg: dict, ckpt: dict, path: Path, f32: bool = False) -> None:
    """The checkpoint as a GGUF of llama.cpp's `rwkv6` architecture.

    Layout differences from the official checkpoint (GGUF lists dimensions fastest first, so
    a numpy array of shape [a, b] is a GGUF tensor {b, a}):
      - att.time_maa_w/k/v/r/g are stacked, in that order, into one `time_mix_lerp_fused`
        {C, 1, 1, 5}; every [1, 1, C] vector is stored as {C};
      - time_maa_w1 [C, 5D] and time_decay_w1 [C, D'] are stored transposed ({C, 5D},
        {C, D'}), time_decay_w2 [D', C] transposed ({D', C}), time_maa_w2 [5, D, C] with its
        last two axes swapped ({D, C, 5}): llama.cpp multiplies them as weights;
      - time_faaaa [H, N] is `time_mix_first` {N, H}, unchanged in memory;
      - rescale_every_n_layers = 0: the weights are the true ones (llama.cpp halves the
        residual every N layers when N > 0, for checkpoints whose att.output/ffn.value were
        divided by 2^(layer/N)).
    Everything but the ten large matrices (eight per block, embedding, head) is F32, as
    llama.cpp's own converter keeps it (its RWKV ops read those in f32); with `f32` the large
    matrices are F32 too (llama.cpp then multiplies in f32 without rounding activations to f16).
    """
    c, L = cfg["n_embd"], cfg["n_layer"]
    arch = "rwkv6"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.context_length", 1048576)  # a recurrent model has no limit
    w.add_uint32(f"{arch}.embedding_length", c)
    w.add_uint32(f"{arch}.block_count", L)
    w.add_uint32(f"{arch}.feed_forward_length", cfg["dim_ffn"])
    w.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32(f"{arch}.rescale_every_n_layers", 0)
    w.add_uint32(f"{arch}.wkv.head_size", cfg["head_size"])
    w.add_uint32(f"{arch}.time_mix_extra_dim", cfg["lora_mix"])
    w.add_uint32(f"{arch}.time_decay_extra_dim", cfg["lora_decay"])
    w.add_uint32(f"{arch}.token_shift_count", 2)  # attention and channel-mix shifts
    w.add_uint32(f"{arch}.attention.head_count", 0)  # required key, unused by rwkv6
    w.add_uint32(f"{arch}.vocab_size", cfg["vocab"])
    w.add_file_type(0 if f32 else 1)  # ALL_F32 or MOSTLY_F16
    # No tokenizer: the benchmark feeds token ids (llama.cpp then takes the vocabulary size
    # from rwkv6.vocab_size).
    w.add_tokenizer_model("none")

    def as_f32(t):
        return np.ascontiguousarray(np.asarray(t, dtype=np.float32))

    def matrix(t):
        return as_f32(t) if f32 else t

    names = {
        "ln1.weight": "attn_norm.weight", "ln1.bias": "attn_norm.bias",
        "ln2.weight": "attn_norm_2.weight", "ln2.bias": "attn_norm_2.bias",
        "att.ln_x.weight": "time_mix_ln.weight", "att.ln_x.bias": "time_mix_ln.bias",
        "att.time_maa_x": "time_mix_lerp_x.weight",
        "att.time_maa_w1": "time_mix_w1.weight", "att.time_maa_w2": "time_mix_w2.weight",
        "att.time_decay": "time_mix_decay.weight",
        "att.time_decay_w1": "time_mix_decay_w1.weight",
        "att.time_decay_w2": "time_mix_decay_w2.weight",
        "att.time_faaaa": "time_mix_first.weight",
        "att.receptance.weight": "time_mix_receptance.weight",
        "att.key.weight": "time_mix_key.weight", "att.value.weight": "time_mix_value.weight",
        "att.gate.weight": "time_mix_gate.weight",
        "att.output.weight": "time_mix_output.weight",
        "ffn.time_maa_k": "channel_mix_lerp_k.weight",
        "ffn.time_maa_r": "channel_mix_lerp_r.weight",
        "ffn.key.weight": "channel_mix_key.weight",
        "ffn.receptance.weight": "channel_mix_receptance.weight",
        "ffn.value.weight": "channel_mix_value.weight",
    }
    top = {
        "emb.weight": "token_embd.weight", "head.weight": "output.weight",
        "blocks.0.ln0.weight": "token_embd_norm.weight",
        "blocks.0.ln0.bias": "token_embd_norm.bias",
        "ln_out.weight": "output_norm.weight", "ln_out.bias": "output_norm.bias",
    }
    for name, t in top.items():
        w.add_tensor(t, matrix(ckpt[name]) if ckpt[name].ndim == 2 else as_f32(ckpt[name]))
    for i in range(L):
        b = f"blocks.{i}."
        for rest, out in names.items():
            t = ckpt[b + rest]
            if rest in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
                t = as_f32(np.asarray(t).T)
            elif rest == "att.time_maa_w2":
                t = as_f32(np.asarray(t).transpose(0, 2, 1))
            elif rest == "att.time_faaaa":
                t = as_f32(t)
            elif t.ndim != 2:
                t = as_f32(t).reshape(-1)
            else:
                t = matrix(t)
            w.add_tensor(f"blk.{i}.{out}", t)
        fused = np.stack([as_f32(ckpt[b + f"att.time_maa_{x}"]).reshape(1, 1, c)
                          for x in "wkvrg"])
        w.add_tensor(f"blk.{i}.time_mix_lerp_fused.weight", fused)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def decode_weight_bytes(cfg: dict, matrix_bytes_per_weight: float) -> float:
    """Bytes read per decoded token: every block matrix, the head (F16) and one embedding row.
    The small f32 tensors (adapters, vectors) are counted too."""
    c, f, v, L = cfg["n_embd"], cfg["dim_ffn"], cfg["vocab"], cfg["n_layer"]
    block_matrices = 6 * c * c + 2 * c * f
    small = 5 * cfg["lora_mix"] * c * 2 + cfg["lora_decay"] * c * 2 + 20 * c
    return L * (block_matrices * matrix_bytes_per_weight + small * 4) + v * c * 2 + c * 2


BYTES_PER_WEIGHT = {"f16": 2.0, "q4": 18 / 32, "tq2": 66 / 256, "tq1": 54 / 256}


def check_same_model(np, llama_cpp, goldcrest: str, gguf_path: Path, gc_path: Path,
                     shape: str, label: str) -> dict:
    """llama.cpp's GGUF against goldcrest's file on a few ids: the largest |difference| of any
    logit, relative to the spread (standard deviation) of goldcrest's logits."""
    ids = [0, 17, 4242, 65535, 31000, 9, 1234, 50000]
    lc = np.array(llamacpp_logits(llama_cpp, gguf_path, ids))
    gc = np.array(goldcrest_logits(goldcrest, gc_path, ids))
    diff = np.abs(lc - gc)
    spread = float(gc.std())
    same_argmax = int((lc.argmax(axis=1) == gc.argmax(axis=1)).sum())
    r = dict(shape=shape, check=label, positions=len(ids),
             max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
             logit_std=spread, max_rel_to_std=float(diff.max()) / spread,
             same_argmax=same_argmax)
    print(json.dumps(r), flush=True)
    return r


def check_f32(np, gguf, llama_cpp, goldcrest: str, cfg: dict, ckpt_path: Path, scratch: Path,
              shape: str) -> dict:
    """The exact-function check: every matrix in f32 on both sides, so llama.cpp does not round
    activations to f16 and the only differences left are f32 summation orders."""
    gguf_path = scratch / f"rwkv6-{shape}-F32.gguf"
    gc_path = scratch / f"rwkv6-{shape}-f32.safetensors"
    write_rwkv6_gguf(np, gguf, cfg, read_hf(np, ckpt_path), gguf_path, f32=True)
    subprocess.run([goldcrest, "convert", "rwkv6", str(ckpt_path), str(gc_path), "--weights",
                    "f32", "--embeddings", "f32"], check=True, stdout=subprocess.DEVNULL)
    try:
        return check_same_model(np, llama_cpp, goldcrest, gguf_path, gc_path, shape,
                                "llama.cpp F32 vs goldcrest f32")
    finally:
        gguf_path.unlink()
        gc_path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--goldcrest", default="target/release/goldcrest")
    ap.add_argument("--shapes", default="12x768,24x2048", help="LAYERSxWIDTH, comma-separated")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--formats", default="f16,q4,tq2,tq1")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--bandwidth", type=float, default=0.0,
                    help="streaming read GB/s for the roofline column (e.g. from "
                         "`cargo bench --bench kernels` + tools/bench/roofline.py)")
    ap.add_argument("--f32-check-shapes", default="12x768",
                    help="shapes checked with every matrix in f32 on both sides before timing "
                         "(the exact check; needs twice the f16 checkpoint's disk for a while, "
                         "and `goldcrest convert` holds input and output in RAM: 24x2048 in "
                         "f32 needs ~10 GB free; check 4x2048 and 24x768 instead)")
    ap.add_argument("--check-only", action="store_true",
                    help="run the logit checks, write no quantized files, time nothing")
    ap.add_argument("--max-rel-f32", type=float, default=1e-2,
                    help="refuse to time if the f32 check's max |logit difference| / logit std "
                         "exceeds this (f32 summation order only, which a random deep model "
                         "amplifies: ~2e-4 at 12 layers, ~2e-3 at 24)")
    ap.add_argument("--max-rel-f16", type=float, default=0.1,
                    help="note (not refuse) an F16 difference beyond this: llama.cpp rounds "
                         "activations to f16 before F16 products, goldcrest does not")
    ap.add_argument("--lock", metavar="FILE", help="hold this lock file around each timed run")
    ap.add_argument("--scratch", default="/tmp/goldcrest-vs-llamacpp-rwkv6")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated files, and reuse them when all are there")
    a = ap.parse_args()

    import numpy as np
    import gguf
    import llama_cpp

    llama_cpp.llama_backend_init()
    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in a.threads.split(",")]
    wanted = a.formats.split(",")
    rows, checks = [], []
    try:
        for shape in a.shapes.split(","):
            cfg = config(shape)
            ckpt_path = scratch / f"rwkv6-{shape}.safetensors"
            f16_gguf = scratch / f"rwkv6-{shape}-F16.gguf"
            kept = a.keep and f16_gguf.exists() and all(
                (scratch / f"rwkv6-{shape}-{fmt}.safetensors").exists()
                for fmt, _ in FORMATS if fmt == "f16" or fmt in wanted)
            if not kept:
                print(f"[{shape}] writing random checkpoint", file=sys.stderr, flush=True)
                write_f16_safetensors(np, rwkv6_tensors(cfg), ckpt_path,
                                      lambda rng, s, k: random_rwkv6(np, rng, s, k))
                if shape in a.f32_check_shapes.split(","):
                    # First, while only the checkpoint is on disk (the f32 files are twice as
                    # large as the f16 ones).
                    print(f"[{shape}] f32 check", file=sys.stderr, flush=True)
                    check = check_f32(np, gguf, llama_cpp, a.goldcrest, cfg, ckpt_path,
                                      scratch, shape)
                    checks.append(check)
                    if check["max_rel_to_std"] > a.max_rel_f32:
                        raise SystemExit(f"[{shape}] llama.cpp and goldcrest disagree: {check}")
                print(f"[{shape}] writing GGUF", file=sys.stderr, flush=True)
                write_rwkv6_gguf(np, gguf, cfg, read_hf(np, ckpt_path), f16_gguf)
            files = {}
            for fmt, label in FORMATS:
                if fmt != "f16" and (a.check_only or fmt not in wanted):
                    continue
                gc_file = scratch / f"rwkv6-{shape}-{fmt}.safetensors"
                if not (kept and gc_file.exists()):
                    print(f"[{shape}] goldcrest convert --weights {fmt}", file=sys.stderr,
                          flush=True)
                    subprocess.run([a.goldcrest, "convert", "rwkv6", str(ckpt_path),
                                    str(gc_file), "--weights", fmt], check=True,
                                   stdout=subprocess.DEVNULL)
                gguf_file = None
                if label == "F16":
                    gguf_file = f16_gguf
                elif label:
                    gguf_file = scratch / f"rwkv6-{shape}-{label}.gguf"
                    if not (kept and gguf_file.exists()):
                        # Embedding and head stay F16, as in goldcrest's q4 file.
                        quantize_gguf(llama_cpp, f16_gguf, gguf_file, LLAMA_FTYPE_MOSTLY_Q4_0,
                                      max(threads), GGML_TYPE_F16)
                files[fmt] = (gc_file, label, gguf_file)
            if not a.keep:
                ckpt_path.unlink(missing_ok=True)
            check = check_same_model(np, llama_cpp, a.goldcrest, f16_gguf, files["f16"][0],
                                     shape, "llama.cpp F16 vs goldcrest f16")
            checks.append(check)
            if check["max_rel_to_std"] > a.max_rel_f16:
                # Not a disagreement about the model (the f32 check is that): a random deep
                # model amplifies llama.cpp's f16 rounding of activations layer after layer.
                print(f"[{shape}] note: F16 logits differ by {check['max_rel_to_std']:.2f} of "
                      "their spread (llama.cpp's f16 activations)", file=sys.stderr, flush=True)

            for fmt, (gc_file, label, gguf_file) in files.items():
                if a.check_only or fmt not in wanted:
                    continue
                for t in threads:
                    print(f"[{shape}] {fmt} vs {label}, {t} thread(s)", file=sys.stderr,
                          flush=True)
                    with bench_lock(a.lock):
                        load = os.getloadavg()[0]
                        lp = ld = None
                        if gguf_file:
                            lp, ld = time_llamacpp(llama_cpp, gguf_file, t, a.prompt_tokens,
                                                   a.gen_tokens, a.repeat)
                        gp, gd, wb = time_goldcrest(a.goldcrest, gc_file, t, a.prompt_tokens,
                                                    a.gen_tokens, a.repeat, [])
                        load = max(load, os.getloadavg()[0])
                    read = decode_weight_bytes(cfg, BYTES_PER_WEIGHT[fmt])
                    row = dict(shape=shape, goldcrest=fmt, llamacpp=label, threads=t,
                               goldcrest_prefill=gp, goldcrest_decode=gd, llamacpp_prefill=lp,
                               llamacpp_decode=ld, goldcrest_weight_bytes=wb,
                               gguf_bytes=gguf_file.stat().st_size if gguf_file else None,
                               decode_read_bytes=read, load=load)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            if not a.keep:
                for gc_file, label, gguf_file in files.values():
                    gc_file.unlink()
                    if gguf_file:
                        gguf_file.unlink(missing_ok=True)
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print("\n| shape | check | max abs logit diff | logit std | max / std | same argmax |")
    print("|---|---|---:|---:|---:|---:|")
    for c in checks:
        print(f"| {c['shape']} | {c['check']} | {c['max_abs_diff']:.2e} "
              f"| {c['logit_std']:.3f} | {c['max_rel_to_std']:.1e} "
              f"| {c['same_argmax']}/{c['positions']} |")
    bw = a.bandwidth
    print("\n| shape | goldcrest | llama.cpp | threads | load | prefill tok/s (gc / llama) | ratio "
          "| decode tok/s (gc / llama) | ratio | MB read/token | roofline tok/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mb = r["decode_read_bytes"] / 1e6
        roof = f"{bw * 1e9 / r['decode_read_bytes']:.1f}" if bw else "-"
        if r["llamacpp"]:
            pre = (f"{r['goldcrest_prefill']:.1f} / {r['llamacpp_prefill']:.1f} "
                   f"| {r['goldcrest_prefill'] / r['llamacpp_prefill']:.2f}x")
            dec = (f"{r['goldcrest_decode']:.2f} / {r['llamacpp_decode']:.2f} "
                   f"| {r['goldcrest_decode'] / r['llamacpp_decode']:.2f}x")
        else:
            pre = f"{r['goldcrest_prefill']:.1f} / - | -"
            dec = f"{r['goldcrest_decode']:.2f} / - | -"
        print(f"| {r['shape']} | {r['goldcrest']} | {r['llamacpp'] or '-'} | {r['threads']} "
              f"| {r['load']:.1f} | {pre} | {dec} | {mb:.0f} | {roof} |")


if __name__ == "__main__":
    main()
