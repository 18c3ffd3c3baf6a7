#!/usr/bin/env python3
"""Golden fixtures for goldcrest's RWKV-6 (Finch, x060) against the reference `rwkv` PyPI package.

Reference: `rwkv==0.8.32` (Apache-2.0), class `rwkv.model.RWKV`, v6.0 path, strategy "cpu fp32"
(RESCALE_LAYER = 0, JIT on, no CUDA kernels). torch from PyPI (2.15.0 was used) runs it on CPU.

Setup, outside the repository (torch is ~3 GB with its mandatory CUDA wheels):

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.15.0 rwkv==0.8.32 numpy==2.4.6 safetensors==0.8.0
    /work/venv-torch/bin/python tools/rwkv6/make_fixtures.py tests/fixtures/rwkv6

For each tiny random model NAME it writes:

- NAME.safetensors: the model in goldcrest form (official RWKV-6 tensor names and shapes,
  weights stored as f16 to keep the fixtures small, goldcrest metadata).
- NAME.golden.safetensors: f32 tensors
    tokens        [T] i32        the token ids fed to the model
    step_logits   [T, V]         logits after each token, one `forward([tok], state)` call per token
    step_state    [L, C*(N+2)]   state after the last token, goldcrest layout per layer:
                                 att shift [C], WKV [H][N key][N value], ffn shift [C]
    chunk_logits  [T, V]         logits at every position from `forward(tokens[:S], None,
                                 full_output=True)` then `forward(tokens[S:], state, full_output=True)`
    chunk_state   [L, C*(N+2)]   state after the chunked run
  and metadata `split` = S.

The reference sees exactly the f16-rounded weights (upcast to f32), so goldcrest's f32 run of
the same file must agree to float32 rounding.
"""

import importlib.metadata
import os
import sys
import tempfile

os.environ["RWKV_JIT_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from rwkv.model import RWKV  # noqa: E402

REFERENCE_VERSION = "0.8.32"

# name, layers, width, head size, ffn width, vocab, LoRA dim of the mix, LoRA dim of the decay,
# tokens, chunk split, seed
MODELS = [
    ("tiny_a", 2, 64, 16, 224, 96, 8, 16, 14, 5, 1),
    ("tiny_b", 2, 64, 32, 128, 40, 32, 64, 11, 7, 2),
]


def random_model(rng, L, C, N, F, V, d_mix, d_decay):
    """Random weights in official names and shapes, scaled so activations stay O(1)."""
    H = C // N

    def mat(rows, cols, fan_in):
        return rng.standard_normal((rows, cols)) / np.sqrt(fan_in)

    def norm(prefix):
        return {
            prefix + ".weight": 1.0 + 0.2 * rng.standard_normal(C),
            prefix + ".bias": 0.2 * rng.standard_normal(C),
        }

    w = {"emb.weight": rng.standard_normal((V, C))}
    w.update(norm("blocks.0.ln0"))
    for i in range(L):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        w.update(norm(b + "ln1"))
        w.update(norm(b + "ln2"))
        for m in "xwkvrg":
            w[a + "time_maa_" + m] = rng.uniform(0.0, 1.0, (1, 1, C))
        w[a + "time_maa_w1"] = 0.5 * mat(C, 5 * d_mix, C)
        w[a + "time_maa_w2"] = 0.5 * rng.standard_normal((5, d_mix, C)) / np.sqrt(d_mix)
        # Spread the decay so some channels forget fast and some keep memory.
        w[a + "time_decay"] = rng.uniform(-5.0, 1.0, (1, 1, C))
        w[a + "time_decay_w1"] = 0.5 * mat(C, d_decay, C)
        w[a + "time_decay_w2"] = 0.5 * rng.standard_normal((d_decay, C)) / np.sqrt(d_decay)
        w[a + "time_faaaa"] = 0.5 * rng.standard_normal((H, N))
        for p in ("receptance", "key", "value", "gate", "output"):
            w[a + p + ".weight"] = mat(C, C, C)
        w.update(norm(a + "ln_x"))
        w[f + "time_maa_k"] = rng.uniform(0.0, 1.0, (1, 1, C))
        w[f + "time_maa_r"] = rng.uniform(0.0, 1.0, (1, 1, C))
        w[f + "key.weight"] = mat(F, C, C)
        w[f + "receptance.weight"] = mat(C, C, C)
        w[f + "value.weight"] = mat(C, F, F)
    w.update(norm("ln_out"))
    w["head.weight"] = mat(V, C, C)
    # Round to f16 once: the file stores f16, the reference runs on exactly those values.
    return {k: v.astype(np.float16) for k, v in w.items()}


def goldcrest_state(state, L):
    rows = []
    for i in range(L):
        att, wkv, ffn = state[3 * i], state[3 * i + 1], state[3 * i + 2]
        rows.append(np.concatenate([att.float().numpy().ravel(), wkv.float().numpy().ravel(), ffn.float().numpy().ravel()]))
    return np.stack(rows).astype(np.float32)


def main(out_dir):
    installed = importlib.metadata.version("rwkv")
    if installed != REFERENCE_VERSION:
        sys.exit(f"rwkv=={REFERENCE_VERSION} required, found {installed}")
    os.makedirs(out_dir, exist_ok=True)
    for name, L, C, N, F, V, d_mix, d_decay, T, split, seed in MODELS:
        rng = np.random.Generator(np.random.PCG64(seed))
        w16 = random_model(rng, L, C, N, F, V, d_mix, d_decay)
        tokens = [int(t) for t in rng.integers(0, V, T)]
        meta = {
            "goldcrest.format_version": "1.0",
            "goldcrest.arch": "rwkv6",
            "goldcrest.rwkv6.n_layer": str(L),
            "goldcrest.rwkv6.n_embd": str(C),
            "goldcrest.rwkv6.head_size": str(N),
            "goldcrest.rwkv6.dim_ffn": str(F),
            "goldcrest.rwkv6.vocab_size": str(V),
            "generated_by": f"tools/rwkv6/make_fixtures.py (rwkv=={REFERENCE_VERSION}, torch=={torch.__version__}, seed {seed})",
        }
        save_file(w16, os.path.join(out_dir, name + ".safetensors"), metadata=meta)

        with tempfile.TemporaryDirectory() as tmp:
            pth = os.path.join(tmp, name + ".pth")
            torch.save({k: torch.from_numpy(v.astype(np.float32)) for k, v in w16.items()}, pth)
            model = RWKV(model=pth, strategy="cpu fp32", verbose=False)

        state = None
        step_logits = []
        for t in tokens:
            out, state = model.forward([t], state)
            step_logits.append(out.float().numpy().copy())
        step_state = goldcrest_state(state, L)

        out1, state = model.forward(tokens[:split], None, full_output=True)
        out2, state = model.forward(tokens[split:], state, full_output=True)
        chunk_logits = np.concatenate([out1.float().numpy().reshape(-1, V), out2.float().numpy().reshape(-1, V)])
        chunk_state = goldcrest_state(state, L)

        step_logits = np.stack(step_logits).astype(np.float32)
        print(
            f"{name}: L={L} C={C} N={N} F={F} V={V} T={T}; |logits| max {np.abs(step_logits).max():.3f}; "
            f"step vs chunk: logits {np.abs(step_logits - chunk_logits).max():.2e}, "
            f"state {np.abs(step_state - chunk_state).max():.2e}"
        )
        save_file(
            {
                "tokens": np.array(tokens, dtype=np.int32),
                "step_logits": step_logits,
                "step_state": step_state,
                "chunk_logits": chunk_logits.astype(np.float32),
                "chunk_state": chunk_state,
            },
            os.path.join(out_dir, name + ".golden.safetensors"),
            metadata={"split": str(split), "reference": f"rwkv=={REFERENCE_VERSION}"},
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/rwkv6")
