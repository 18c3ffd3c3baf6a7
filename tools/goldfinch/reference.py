#!/usr/bin/env python3
"""goldcrest's own float64 numpy reference for GoldFinch (arXiv 2407.12077) and its golden fixtures.

Written from the equations (docs/models/goldfinch.md and the research note), not from the
paper's code. Layers 0 .. floor(2L/3)-1 are Finch-C2 (RWKV-6 variant), the rest are GOLD
attention layers; every layer has the RWKV-6 channel mix.

Setup, outside the repository (numpy only, no torch):

    python3 -m venv /work/venv-goldfinch
    /work/venv-goldfinch/bin/pip install numpy==2.4.6 safetensors==0.8.0
    /work/venv-goldfinch/bin/python tools/goldfinch/reference.py tests/fixtures/goldfinch

For each tiny random model NAME it writes:

- NAME.safetensors: the model with the official GoldFinch tensor names and shapes
  (`w_kv_cache_a.weight`, `blocks.N.att.time_maa_q_w1`, ...), f16 weights, goldcrest metadata.
- NAME.golden.safetensors: f32 tensors
    tokens          [T] i32   the prompt
    full_logits     [T, V]    one whole-sequence call over all T tokens
    step_logits     [T, V]    T one-token calls, state carried
    prefill_logits  [T-S+1, V] a whole-sequence call over tokens[:S] (its last row), then
                              one-token calls over tokens[S:]
    restore_logits  [T-S+1, V] as prefill_logits, but the context after the prefill is saved
                              in the at-rest form (token ids, compressed keys c_t as f32,
                              Finch-C2 states, token shifts), restored into a fresh state, then decoded
    compressed      [T, C/16] the compressed keys c_t of the whole prompt
  and metadata `split` = S.

RoPE ablation (tiny_rope): after ln_q / ln_k, each head's query and keys are rotated in
consecutive pairs (x[2i], x[2i+1]) by the angle pos * base^(-2i/64), the query at its own
position and each key at its cache position (0 for the first token). Only the difference of
positions matters, so this equals the paper's table lookup aligned at the sequence's end.

Only whole-sequence and one-token calls make goldens: the paper's code is wrong for a
multi-token chunk after existing context (top-left aligned causal mask).
"""

import os
import sys

import numpy as np
from safetensors.numpy import save_file

NUMPY_VERSION = "2.4.6"

HEAD = 64  # head size of both layer kinds
MIX_RANK = 32  # time_maa_w1 is [C, 5*32] in Finch-C2, time_maa_q_w1 [C, 32] in GOLD
DECAY_RANK = 64
VALUE2_RANK = 64
COMPRESSION = 16

# name, layers, width, ffn width, vocab, tokens, prefill split, seed, RoPE base (None: no RoPE)
MODELS = [
    ("tiny_a", 3, 128, 256, 64, 12, 7, 11, None),
    ("tiny_b", 6, 128, 192, 80, 10, 4, 12, None),
    # The paper's RoPE ablation (configs/goldfinch_ablation_rope10k.yaml): RoPE base 10000 on
    # the GOLD queries and keys.
    ("tiny_rope", 3, 128, 256, 64, 12, 7, 13, 10000.0),
]


def first_gold_layer(n_layer):
    return n_layer * 2 // 3


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def rms_norm(x):
    # The +1e-8 sits outside the sqrt, and there is no weight.
    return x / (np.sqrt((x * x).mean(-1, keepdims=True)) + 1e-8)


def random_model(rng, L, C, F, V):
    """Random weights in official names and shapes, scaled so activations stay O(1)."""
    c_dim = C // COMPRESSION
    lora = max(C // COMPRESSION, 64)

    def mat(rows, cols, fan_in):
        return rng.standard_normal((rows, cols)) / np.sqrt(fan_in)

    def norm(prefix, n=C):
        return {prefix + ".weight": 1.0 + 0.2 * rng.standard_normal(n), prefix + ".bias": 0.2 * rng.standard_normal(n)}

    def mix():
        return rng.uniform(0.0, 1.0, (1, 1, C))

    w = {"emb.weight": rng.standard_normal((V, C))}
    w.update(norm("blocks.0.ln0"))
    gold = first_gold_layer(L)
    for i in range(L):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        w.update(norm(b + "ln1"))
        w.update(norm(b + "ln2"))
        if i < gold:
            for m in ("x", "r", "k", "v", "w", "v2"):
                w[a + "time_maa_" + m] = mix()
            w[a + "time_maa_w1"] = 0.5 * mat(C, 5 * MIX_RANK, C)
            w[a + "time_maa_w2"] = 0.5 * rng.standard_normal((5, MIX_RANK, C)) / np.sqrt(MIX_RANK)
            w[a + "time_decay"] = rng.uniform(-5.0, 1.0, (1, 1, C))
            w[a + "time_decay_w1"] = 0.5 * mat(C, DECAY_RANK, C)
            w[a + "time_decay_w2"] = 0.5 * mat(DECAY_RANK, C, DECAY_RANK)
            w[a + "time_value2_w1"] = 0.5 * mat(C, VALUE2_RANK, C)
            w[a + "time_value2_w2"] = 0.5 * mat(VALUE2_RANK, C, VALUE2_RANK)
            # Present in checkpoints, unused by Finch-C2: a reader must ignore it.
            w[a + "time_faaaa"] = 0.5 * rng.standard_normal((C // HEAD, HEAD))
            for p in ("receptance", "key", "value", "output"):
                w[a + p + ".weight"] = mat(C, C, C)
            w.update(norm(a + "ln_x"))
        else:
            for m in ("x", "q", "v_cache", "k", "v"):
                w[a + "time_maa_" + m] = mix()
            w[a + "time_maa_q_w1"] = 0.5 * mat(C, MIX_RANK, C)
            w[a + "time_maa_q_w2"] = 0.5 * mat(MIX_RANK, C, MIX_RANK)
            w[a + "time_maa_kv_w1"] = 0.5 * mat(C, 2 * MIX_RANK, C)
            w[a + "time_maa_kv_w2"] = 0.5 * rng.standard_normal((2, MIX_RANK, C)) / np.sqrt(MIX_RANK)
            w[a + "time_key_w1"] = 0.5 * mat(C, lora, C)
            w[a + "time_key_w2"] = 0.5 * mat(lora, C, lora)
            w[a + "time_value_w1"] = 0.5 * mat(C, lora, C)
            w[a + "time_value_w2"] = 0.5 * mat(lora, C, lora)
            w[a + "query.weight"] = mat(C, C, C)
            w[a + "output.weight"] = mat(C, C, C)
            for n in ("ln_q", "ln_k", "ln_v", "ln_x"):
                w.update(norm(a + n))
        w[f + "time_maa_k"] = mix()
        w[f + "time_maa_r"] = mix()
        w[f + "key.weight"] = mat(F, C, C)
        w[f + "receptance.weight"] = mat(C, C, C)
        w[f + "value.weight"] = mat(C, F, F)
    w.update(norm("ln_out"))
    w["head.weight"] = mat(V, C, C)
    w["w_kv_cache_a.weight"] = mat(c_dim, C, C)
    w["w_kv_cache_b.weight"] = mat(C, C + c_dim, C + c_dim)
    # Round to f16 once: the file stores f16, the reference computes on exactly those values.
    return {k: v.astype(np.float16) for k, v in w.items()}


def rope(x, positions, base):
    """Rotates rows x [T, C] (heads of HEAD) in consecutive pairs by pos * base^(-2i/HEAD)."""
    x = x.reshape(len(positions), -1, HEAD // 2, 2)
    freq = base ** -(np.arange(0, HEAD, 2) / HEAD)
    angle = np.asarray(positions, dtype=np.float64)[:, None] * freq[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    a, b = x[..., 0], x[..., 1]
    return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(len(positions), -1)


class GoldFinch:
    def __init__(self, w16, L, rope_base=None):
        self.rope_base = rope_base
        self.w = {k: v.astype(np.float64) for k, v in w16.items()}
        self.L = L
        self.gold = first_gold_layer(L)
        self.C = self.w["emb.weight"].shape[1]

    def p(self, name):
        return self.w[name]

    def fresh_state(self):
        C, H = self.C, self.C // HEAD
        return {
            "att_shift": np.zeros((self.L, C)),
            "ffn_shift": np.zeros((self.L, C)),
            "wkv": np.zeros((self.gold, H, HEAD, HEAD)),
            "tokens": [],
            "compressed": np.zeros((0, C // COMPRESSION)),
        }

    def channel_mix(self, i, x, shift):
        f = f"blocks.{i}.ffn."
        dx = shift - x
        xk = x + dx * self.p(f + "time_maa_k").ravel()
        xr = x + dx * self.p(f + "time_maa_r").ravel()
        k = np.maximum(self.p(f + "key.weight") @ xk, 0.0) ** 2
        return 1.0 / (1.0 + np.exp(-(self.p(f + "receptance.weight") @ xr))) * (self.p(f + "value.weight") @ k)

    def finch_c2(self, i, x, shift, S):
        """One token of a Finch-C2 time mix; updates the WKV state S [H, N key, N value] in place."""
        a = f"blocks.{i}.att."
        m = lambda n: self.p(a + "time_maa_" + n).ravel()  # noqa: E731
        dx = shift - x
        lora = np.tanh((x + dx * m("x")) @ self.p(a + "time_maa_w1")).reshape(5, MIX_RANK)
        mr, mk, mv, mw, mv2 = (lora[j] @ self.p(a + "time_maa_w2")[j] for j in range(5))
        xr, xk, xv = x + dx * (m("r") + mr), x + dx * (m("k") + mk), x + dx * (m("v") + mv)
        xw, xv2 = x + dx * (m("w") + mw), x + dx * (m("v2") + mv2)
        r = self.p(a + "receptance.weight") @ xr
        k = self.p(a + "key.weight") @ xk
        v = self.p(a + "value.weight") @ xv
        wlog = self.p(a + "time_decay").ravel() + np.tanh(xw @ self.p(a + "time_decay_w1")) @ self.p(a + "time_decay_w2")
        decay = np.exp(-np.exp(wlog))
        k = k * (1.0 - decay)
        v2 = self.p(a + "value.weight") @ xv2 + np.tanh(xv2 @ self.p(a + "time_value2_w1")) @ self.p(a + "time_value2_w2")
        H = self.C // HEAD
        rh, kh, vh, dh = (t.reshape(H, HEAD) for t in (r, k, v, decay))
        y = np.einsum("hi,hij->hj", rh, S).ravel() + v2
        S *= dh[:, :, None]
        S += kh[:, :, None] * vh[:, None, :]
        y = layer_norm(y, self.p(a + "ln_x.weight"), self.p(a + "ln_x.bias"))
        return self.p(a + "output.weight") @ y

    def ln0_emb(self, tokens):
        return layer_norm(self.p("emb.weight")[tokens], self.p("blocks.0.ln0.weight"), self.p("blocks.0.ln0.bias"))

    def gold_keys_values(self, i, tokens, compressed):
        """Per-layer keys and values of every cached position [T, C]; the shift before position 0 is zero."""
        a = f"blocks.{i}.att."
        m = lambda n: self.p(a + "time_maa_" + n).ravel()  # noqa: E731
        x0 = self.ln0_emb(tokens)
        khat = rms_norm(np.concatenate([x0, compressed], axis=1) @ self.p("w_kv_cache_b.weight").T)
        xo = rms_norm(x0)
        xo_prev = np.vstack([np.zeros((1, self.C)), xo[:-1]])
        khat_prev = np.vstack([np.zeros((1, self.C)), khat[:-1]])
        dxo = xo_prev - xo
        kv = np.tanh((xo + dxo * m("v_cache")) @ self.p(a + "time_maa_kv_w1")).reshape(-1, 2, MIX_RANK)
        mk = kv[:, 0] @ self.p(a + "time_maa_kv_w2")[0]
        mv = kv[:, 1] @ self.p(a + "time_maa_kv_w2")[1]
        k = khat + (khat_prev - khat) * (m("k") + mk)
        k = k + np.tanh(k @ self.p(a + "time_key_w1")) @ self.p(a + "time_key_w2")
        v = xo + dxo * (m("v") + mv)
        v = v + np.tanh(v @ self.p(a + "time_value_w1")) @ self.p(a + "time_value_w2")
        k = layer_norm(k, self.p(a + "ln_k.weight"), self.p(a + "ln_k.bias"))
        v = layer_norm(v, self.p(a + "ln_v.weight"), self.p(a + "ln_v.bias"))
        if self.rope_base is not None:
            k = rope(k, np.arange(len(tokens)), self.rope_base)
        return k, v

    def gold_query(self, i, x, shift):
        a = f"blocks.{i}.att."
        m = lambda n: self.p(a + "time_maa_" + n).ravel()  # noqa: E731
        dx = shift - x
        mq = np.tanh((x + dx * m("x")) @ self.p(a + "time_maa_q_w1")) @ self.p(a + "time_maa_q_w2")
        q = self.p(a + "query.weight") @ (x + dx * (m("q") + mq))
        return layer_norm(q, self.p(a + "ln_q.weight"), self.p(a + "ln_q.bias"))

    def gold_attend(self, i, q, k, v):
        """Attention of one query over keys/values [T, C] (all of them visible), per head of 64."""
        a = f"blocks.{i}.att."
        H = self.C // HEAD
        y = np.empty(self.C)
        for h in range(H):
            sl = slice(h * HEAD, (h + 1) * HEAD)
            scores = k[:, sl] @ q[sl] / np.sqrt(HEAD)
            p = np.exp(scores - scores.max())
            y[sl] = (p / p.sum()) @ v[:, sl]
        y = layer_norm(y, self.p(a + "ln_x.weight"), self.p(a + "ln_x.bias"))
        return self.p(a + "output.weight") @ y

    def forward(self, tokens, state):
        """Runs `tokens` after `state`; returns logits [len(tokens), V]. Exact for any chunk length
        (each query sees every cached position up to and including its own)."""
        st = state
        T = len(tokens)
        x = self.ln0_emb(np.array(tokens))
        for i in range(self.gold):
            b = f"blocks.{i}."
            for t in range(T):
                xa = layer_norm(x[t], self.p(b + "ln1.weight"), self.p(b + "ln1.bias"))
                x[t] = x[t] + self.finch_c2(i, xa, st["att_shift"][i], st["wkv"][i])
                st["att_shift"][i] = xa
                xf = layer_norm(x[t], self.p(b + "ln2.weight"), self.p(b + "ln2.bias"))
                x[t] = x[t] + self.channel_mix(i, xf, st["ffn_shift"][i])
                st["ffn_shift"][i] = xf
        st["tokens"] = st["tokens"] + [int(t) for t in tokens]
        st["compressed"] = np.vstack([st["compressed"], x @ self.p("w_kv_cache_a.weight").T])
        n_prev = len(st["tokens"]) - T
        for i in range(self.gold, self.L):
            b = f"blocks.{i}."
            k, v = self.gold_keys_values(i, np.array(st["tokens"]), st["compressed"])
            for t in range(T):
                xa = layer_norm(x[t], self.p(b + "ln1.weight"), self.p(b + "ln1.bias"))
                q = self.gold_query(i, xa, st["att_shift"][i])
                visible = n_prev + t + 1
                if self.rope_base is not None:
                    q = rope(q[None, :], [visible - 1], self.rope_base)[0]
                x[t] = x[t] + self.gold_attend(i, q, k[:visible], v[:visible])
                st["att_shift"][i] = xa
                xf = layer_norm(x[t], self.p(b + "ln2.weight"), self.p(b + "ln2.bias"))
                x[t] = x[t] + self.channel_mix(i, xf, st["ffn_shift"][i])
                st["ffn_shift"][i] = xf
        xo = layer_norm(x, self.p("ln_out.weight"), self.p("ln_out.bias"))
        return xo @ self.p("head.weight").T


def save_at_rest(state):
    """The context as goldcrest persists it: f32 arrays (token ids as i32)."""
    return {
        "tokens": np.array(state["tokens"], dtype=np.int32),
        "compressed": state["compressed"].astype(np.float32),
        "att_shift": state["att_shift"].astype(np.float32),
        "ffn_shift": state["ffn_shift"].astype(np.float32),
        "wkv": state["wkv"].astype(np.float32),
    }


def restore_at_rest(saved):
    return {
        "tokens": [int(t) for t in saved["tokens"]],
        "compressed": saved["compressed"].astype(np.float64),
        "att_shift": saved["att_shift"].astype(np.float64),
        "ffn_shift": saved["ffn_shift"].astype(np.float64),
        "wkv": saved["wkv"].astype(np.float64),
    }


def main(out_dir):
    if np.__version__ != NUMPY_VERSION:
        sys.exit(f"numpy=={NUMPY_VERSION} required, found {np.__version__}")
    os.makedirs(out_dir, exist_ok=True)
    for name, L, C, F, V, T, split, seed, rope_base in MODELS:
        rng = np.random.Generator(np.random.PCG64(seed))
        w16 = random_model(rng, L, C, F, V)
        tokens = [int(t) for t in rng.integers(0, V, T)]
        meta = {
            "goldcrest.format_version": "1.0",
            "goldcrest.arch": "goldfinch",
            "goldcrest.goldfinch.n_layer": str(L),
            "goldcrest.goldfinch.n_embd": str(C),
            "goldcrest.goldfinch.head_size": str(HEAD),
            "goldcrest.goldfinch.dim_ffn": str(F),
            "goldcrest.goldfinch.vocab_size": str(V),
            "goldcrest.goldfinch.first_gold_layer": str(first_gold_layer(L)),
            "goldcrest.goldfinch.kv_cache_compression": str(COMPRESSION),
            "generated_by": f"tools/goldfinch/reference.py (numpy=={NUMPY_VERSION}, seed {seed})",
        }
        if rope_base is not None:
            meta["goldcrest.goldfinch.rope_theta"] = str(int(rope_base))
        save_file(w16, os.path.join(out_dir, name + ".safetensors"), metadata=meta)
        model = GoldFinch(w16, L, rope_base)

        st = model.fresh_state()
        full = model.forward(tokens, st)
        compressed = st["compressed"].copy()

        st = model.fresh_state()
        step = np.vstack([model.forward([t], st) for t in tokens])

        st = model.fresh_state()
        pre = [model.forward(tokens[:split], st)[-1:]]
        saved = save_at_rest(st)
        pre += [model.forward([t], st) for t in tokens[split:]]
        pre = np.vstack(pre)

        st = restore_at_rest(saved)
        res = np.vstack([full[split - 1 : split]] + [model.forward([t], st) for t in tokens[split:]])
        # The first row of a restore is the prefill's own last row: a restore gives no logits.
        print(
            f"{name}: L={L} C={C} F={F} V={V} T={T} S={split}; |logits| max {np.abs(full).max():.3f}; "
            f"full vs step {np.abs(full - step).max():.2e}, prefill vs full {np.abs(pre - full[split - 1 :]).max():.2e}, "
            f"restore vs full {np.abs(res - full[split - 1 :]).max():.2e}"
        )
        save_file(
            {
                "tokens": np.array(tokens, dtype=np.int32),
                "full_logits": full.astype(np.float32),
                "step_logits": step.astype(np.float32),
                "prefill_logits": pre.astype(np.float32),
                "restore_logits": res.astype(np.float32),
                "compressed": compressed.astype(np.float32),
            },
            os.path.join(out_dir, name + ".golden.safetensors"),
            metadata={"split": str(split), "reference": f"tools/goldfinch/reference.py numpy=={NUMPY_VERSION}"},
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/goldfinch")
