#!/usr/bin/env python3
"""Side-by-side prefill/decode speed of goldcrest and llama.cpp on the same random weights.

For each model shape this script
  1. writes random weights once as a Hugging Face checkpoint (config.json + model.safetensors,
     f16, HF tensor names) under a scratch directory (default /tmp),
  2. converts it with `goldcrest convert llama|qwen2 --weights FMT` for every goldcrest format,
  3. writes the same f16 tensors as a GGUF file with the `gguf` package (own code: names and
     metadata below) and quantizes that with llama.cpp's own quantizer (llama_model_quantize,
     embeddings/head kept F16 like goldcrest's default),
  4. times llama.cpp through llama-cpp-python's low-level API (one warm-up, then the median of
     --repeat runs: prefill of --prompt-tokens random ids in one batch from an empty cache, then
     --gen-tokens single-token decodes) and `goldcrest bench --json` with the same settings,
     for each thread count, and prints one markdown table plus JSON lines.

Scratch files are deleted at the end (--keep keeps them). Nothing from llama.cpp is copied:
it is used as an installed library.

Usage (venv outside the repo; building llama.cpp takes 10-25 minutes on 2 cores):
    python3 tools/bench/compare_llamacpp.py --install /work/venv-llama    # once
    /work/venv-llama/bin/python tools/bench/compare_llamacpp.py \
        --goldcrest target/release/goldcrest --models trilm,qwen2 --threads 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.16"
GGUF = "0.19.0"
NUMPY = "2.4.6"

# (shape name) -> HF config.  TriLM-shaped: Spectra TriLM 1.5B layout at hidden 2048 with the
# issue's intermediate 5632; Qwen2-0.5B: the published config (tied 151936 x 896 embedding).
SHAPES = {
    "trilm": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048,
        intermediate_size=5632, num_hidden_layers=24, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=50304, rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=2048, tie_word_embeddings=False, hidden_act="silu",
    ),
    "qwen2": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896,
        intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=32768, tie_word_embeddings=True, hidden_act="silu",
        use_sliding_window=False,
    ),
}

# goldcrest --weights value -> (llama.cpp ftype, label).  llama_ftype values from llama.h.
FORMATS = {
    "trilm": [("tq2", 37, "TQ2_0"), ("tq1", 36, "TQ1_0")],
    "qwen2": [("q8", 7, "Q8_0"), ("q4", 2, "Q4_0")],
}
GGML_TYPE_F16 = 1
GGML_TYPE_Q8_0 = 8
# --head-weights value -> (goldcrest convert arguments, llama.cpp type of the embedding/head).
HEADS = {"f16": ([], GGML_TYPE_F16), "q8": (["--head-weights", "q8"], GGML_TYPE_Q8_0)}


def install(venv: Path) -> None:
    """Creates `venv` and installs the pinned llama-cpp-python (built from source) and gguf."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON", CMAKE_BUILD_PARALLEL_LEVEL="2")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir",
         f"llama-cpp-python=={LLAMA_CPP_PYTHON}", f"gguf=={GGUF}", f"numpy=={NUMPY}"],
        check=True, env=env,
    )


# ----------------------------------------------------------------------------------------------
# Random checkpoint (HF names), written tensor by tensor so it never sits in RAM twice.

def hf_tensors(cfg: dict):
    """(name, shape, kind) of every tensor of the HF checkpoint."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    qwen = cfg["model_type"] == "qwen2"
    out = [("model.embed_tokens.weight", (v, h), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,), "norm"),
            (p + "self_attn.q_proj.weight", (nh * hd, h), "linear"),
            (p + "self_attn.k_proj.weight", (nkv * hd, h), "linear"),
            (p + "self_attn.v_proj.weight", (nkv * hd, h), "linear"),
            (p + "self_attn.o_proj.weight", (h, nh * hd), "linear"),
            (p + "post_attention_layernorm.weight", (h,), "norm"),
            (p + "mlp.gate_proj.weight", (f, h), "linear"),
            (p + "mlp.up_proj.weight", (f, h), "linear"),
            (p + "mlp.down_proj.weight", (h, f), "linear"),
        ]
        if qwen:
            out += [
                (p + "self_attn.q_proj.bias", (nh * hd,), "bias"),
                (p + "self_attn.k_proj.bias", (nkv * hd,), "bias"),
                (p + "self_attn.v_proj.bias", (nkv * hd,), "bias"),
            ]
    out.append(("model.norm.weight", (h,), "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h), "embed"))
    return out


def random_tensor(np, rng, shape, kind, ternary: bool):
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float16)
    if kind == "bias":
        return (0.02 * rng.standard_normal(shape)).astype(np.float16)
    if kind == "linear" and ternary:
        # TriLM: one absmean scale per tensor times {-1, 0, 1} (exactly representable).
        trits = rng.integers(-1, 2, size=shape, dtype=np.int8)
        return (trits.astype(np.float16) * np.float16(0.0213))
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)


def write_hf(np, cfg: dict, out_dir: Path, ternary: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    write_f16_safetensors(
        np, hf_tensors(cfg), out_dir / "model.safetensors",
        lambda rng, shape, kind: random_tensor(np, rng, shape, kind, ternary))


def write_f16_safetensors(np, tensors, path: Path, make, seed: int = 1234) -> None:
    """Writes `tensors` ((name, shape, kind) triples) as one f16 safetensors file, each made by
    `make(rng, shape, kind)` and written straight away, so the model never sits in RAM whole."""
    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape, kind in tensors:
            t = np.asarray(make(rng, shape, kind), dtype=np.float16)
            assert t.shape == tuple(shape), name
            fh.write(t.tobytes())


def read_hf(np, path: Path) -> dict:
    """name -> read-only f16 memmap view of the checkpoint written by `write_hf`."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    return {
        name: data[m["data_offsets"][0]:m["data_offsets"][1]].view(np.float16).reshape(m["shape"])
        for name, m in header.items()
    }


# ----------------------------------------------------------------------------------------------
# The same tensors as GGUF (llama.cpp names and metadata).

def write_gguf(np, gguf, cfg: dict, hf: dict, path: Path) -> None:
    arch = cfg["model_type"]
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.context_length", cfg["max_position_embeddings"])
    w.add_uint32(f"{arch}.embedding_length", h)
    w.add_uint32(f"{arch}.block_count", cfg["num_hidden_layers"])
    w.add_uint32(f"{arch}.feed_forward_length", cfg["intermediate_size"])
    w.add_uint32(f"{arch}.attention.head_count", nh)
    w.add_uint32(f"{arch}.attention.head_count_kv", nkv)
    w.add_uint32(f"{arch}.rope.dimension_count", hd)
    w.add_float32(f"{arch}.rope.freq_base", cfg["rope_theta"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    w.add_uint32(f"{arch}.vocab_size", cfg["vocab_size"])
    w.add_file_type(1)  # MOSTLY_F16
    # No tokenizer: the benchmark feeds token ids.
    w.add_tokenizer_model("none")

    def permute(t, heads):
        # GGML's llama rope rotates adjacent pairs; HF's rotate_half rotates halves. The same
        # function therefore needs q/k rows reordered (this is the layout convention, not a
        # numerical change).
        rows, cols = t.shape
        return t.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)

    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, t in hf.items():
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            out = f"blk.{layer}.{names[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                t = permute(np.asarray(t), nh)
            elif arch == "llama" and rest == "self_attn.k_proj.weight":
                t = permute(np.asarray(t), nkv)
        if t.ndim == 1:
            t = np.asarray(t, dtype=np.float32)  # norms and biases in f32, as llama.cpp keeps them
        w.add_tensor(out, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_gguf(llama_cpp, src: Path, dst: Path, ftype: int, threads: int, head: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    # A tied model (Qwen2) has no output tensor: llama.cpp then gives the token embedding the
    # output type, so both are set alike.
    params.output_tensor_type = head
    params.token_embedding_type = head
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({dst.name}) failed: {rc}")


# ----------------------------------------------------------------------------------------------
# Timing

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


@contextlib.contextmanager
def bench_lock(path: str | None):
    """Holds the exclusive lock file `path` (as `flock PATH cmd` would), or nothing if None, so
    only one benchmark runs at a time on a shared machine."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LlamaCpp:
    """One llama.cpp model and context (llama-cpp-python's low-level API) for one sequence."""

    def __init__(self, llama_cpp, path: Path, threads: int, n_ctx: int, n_batch: int):
        self.lib = llama_cpp
        mparams = llama_cpp.llama_model_default_params()
        mparams.use_mmap = True
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {path}")
        self.vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def clear(self) -> None:
        if hasattr(self.lib, "llama_memory_clear"):
            self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        else:
            self.lib.llama_kv_self_clear(self.ctx)

    def decode(self, tokens, pos0: int, all_logits: bool = False) -> None:
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits or i == len(tokens) - 1
        if self.lib.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError(f"llama_decode of {len(tokens)} token(s) failed")

    def logits(self, i: int):
        """Logits of batch position `i` of the last decode, as a Python list."""
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return [ptr[j] for j in range(self.vocab)]

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def llamacpp_logits(llama_cpp, path: Path, ids: list[int], threads: int = 1):
    """llama.cpp's logits after every position of `ids`, run as one batch from an empty state."""
    lc = LlamaCpp(llama_cpp, path, threads, n_ctx=len(ids) + 16, n_batch=len(ids))
    try:
        lc.decode(ids, 0, all_logits=True)
        return [lc.logits(i) for i in range(len(ids))]
    finally:
        lc.close()


def goldcrest_logits(exe: str, path: Path, ids: list[int], threads: int = 1):
    """`goldcrest logits` after every position of `ids`."""
    cmd = [exe, "logits", "--model", str(path), "--ids", ",".join(map(str, ids)),
           "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line)["logits"] for line in out.splitlines() if line.strip()]


def time_llamacpp(llama_cpp, path: Path, threads: int, prompt: int, gen: int, repeat: int):
    import random

    lc = LlamaCpp(llama_cpp, path, threads, n_ctx=prompt + gen + 16, n_batch=prompt)
    rnd = random.Random(0x5EED)
    ids = [rnd.randrange(lc.vocab) for _ in range(prompt + gen)]
    pre, dec = [], []
    for run in range(repeat + 1):
        lc.clear()
        t = time.perf_counter()
        lc.decode(ids[:prompt], 0)
        p = prompt / (time.perf_counter() - t)
        t = time.perf_counter()
        for k in range(gen):
            lc.decode([ids[prompt + k]], prompt + k)
        d = gen / (time.perf_counter() - t)
        if run > 0:
            pre.append(p)
            dec.append(d)
    lc.close()
    return median(pre), median(dec)


def time_goldcrest(exe: str, path: Path, threads: int, prompt: int, gen: int, repeat: int,
                   extra: list[str]):
    cmd = [exe, "bench", "--model", str(path), "--prompt-tokens", str(prompt), "--gen-tokens",
           str(gen), "--repeat", str(repeat), "--threads", str(threads), "--json", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r["weight_bytes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--install", metavar="VENV", help="create VENV with the pinned packages and exit")
    ap.add_argument("--goldcrest", default="target/release/goldcrest")
    ap.add_argument("--models", default="trilm,qwen2")
    ap.add_argument("--formats", default="",
                    help="comma-separated goldcrest formats to run (default: all of each model)")
    ap.add_argument("--head-weights", default="f16", choices=sorted(HEADS),
                    help="embedding/head format in both engines (f16: as the checkpoint)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--scratch", default="/tmp/goldcrest-vs-llamacpp")
    ap.add_argument("--keep", action="store_true", help="keep the generated files (implies --reuse)")
    ap.add_argument("--lock", metavar="FILE",
                    help="hold this lock file around each timed run (e.g. /work/wt/bench.lock)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a checkpoint and f16 GGUF already in --scratch")
    a = ap.parse_args()
    if a.install:
        install(Path(a.install))
        return

    import numpy as np
    import gguf
    import llama_cpp

    llama_cpp.llama_backend_init()
    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in a.threads.split(",")]
    rows = []
    try:
        for shape in a.models.split(","):
            cfg = SHAPES[shape]
            hf_dir = scratch / f"{shape}-hf"
            f16_gguf = scratch / f"{shape}-f16.gguf"
            reuse = (a.reuse or a.keep) and f16_gguf.exists()
            if not reuse:
                print(f"[{shape}] writing random f16 checkpoint", file=sys.stderr, flush=True)
                write_hf(np, cfg, hf_dir, ternary=shape == "trilm")
                hf = read_hf(np, hf_dir / "model.safetensors")
                print(f"[{shape}] writing GGUF", file=sys.stderr, flush=True)
                write_gguf(np, gguf, cfg, hf, f16_gguf)
                del hf
            head_args, head_type = HEADS[a.head_weights]
            wanted = set(a.formats.split(",")) if a.formats else None
            for gc_fmt, ftype, label in FORMATS[shape]:
                if wanted is not None and gc_fmt not in wanted:
                    continue
                gc_file = scratch / f"{shape}-{gc_fmt}-head{a.head_weights}.safetensors"
                if not (reuse and gc_file.exists()):
                    subprocess.run([a.goldcrest, "convert", "qwen2" if shape == "qwen2" else "llama",
                                    str(hf_dir), str(gc_file), "--weights", gc_fmt, *head_args],
                                   check=True, stdout=subprocess.DEVNULL)
                q_gguf = scratch / f"{shape}-{label}-head{a.head_weights}.gguf"
                if not (reuse and q_gguf.exists()):
                    quantize_gguf(llama_cpp, f16_gguf, q_gguf, ftype, max(threads), head_type)
                # llama.cpp quantizes activations for all of these formats (Q8_K for TQ*, Q8_0
                # for Q8_0/Q4_0); goldcrest does the same with --int8-acts.
                extra = ["--int8-acts"]
                for t in threads:
                    print(f"[{shape}] {gc_fmt} vs {label}, {t} thread(s)", file=sys.stderr,
                          flush=True)
                    with bench_lock(a.lock):
                        lp, ld = time_llamacpp(llama_cpp, q_gguf, t, a.prompt_tokens,
                                               a.gen_tokens, a.repeat)
                        gp, gd, wb = time_goldcrest(a.goldcrest, gc_file, t, a.prompt_tokens,
                                                    a.gen_tokens, a.repeat, extra)
                    row = dict(shape=shape, goldcrest=gc_fmt, llamacpp=label, threads=t,
                               head=a.head_weights,
                               goldcrest_prefill=gp, goldcrest_decode=gd, llamacpp_prefill=lp,
                               llamacpp_decode=ld, goldcrest_weight_bytes=wb,
                               gguf_bytes=q_gguf.stat().st_size,
                               load=os.getloadavg()[0])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if not a.keep:
                    gc_file.unlink()
                    q_gguf.unlink()
            if not a.keep:
                f16_gguf.unlink()
                shutil.rmtree(hf_dir, ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n| model | goldcrest | llama.cpp | head | threads | load | prefill tok/s (gc / llama) "
          "| ratio | decode tok/s (gc / llama) | ratio |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['goldcrest']} | {r['llamacpp']} | {r['head']} | {r['threads']} "
              f"| {r['load']:.1f} "
              f"| {r['goldcrest_prefill']:.1f} / {r['llamacpp_prefill']:.1f} "
              f"| {r['goldcrest_prefill'] / r['llamacpp_prefill']:.2f}x "
              f"| {r['goldcrest_decode']:.2f} / {r['llamacpp_decode']:.2f} "
              f"| {r['goldcrest_decode'] / r['llamacpp_decode']:.2f}x |")


if __name__ == "__main__":
    main()
