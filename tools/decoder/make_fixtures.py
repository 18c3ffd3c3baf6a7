"""Golden fixtures for goldcrest's transformer decoder (LLaMA / TriLM / Qwen2).

Pinned reference: torch==2.15.0, transformers==5.24.0 (CPU). Run in a venv outside the repo:

    /work/venv-torch/bin/python tools/decoder/make_fixtures.py tests/fixtures/decoder

For each tiny random model it writes a directory with the Hugging Face checkpoint as
`save_pretrained` writes it (config.json + model.safetensors, official tensor names) and:

- golden.json: prompt ids, the 16 greedy tokens generated with the KV cache, versions;
- logits_prompt.f32: little-endian f32 logits of one forward pass over the prompt, [T, vocab];
- logits_steps.f32: the logits `generate` saw at each of the 16 greedy steps, [16, vocab]
  (step 0 is the prompt's last position, later steps come from cached decoding).

Models:
- llama: LlamaForCausalLM with GQA (4 q heads, 2 kv heads), an explicit head_dim that is not
  hidden/heads, attention_bias (q, k, v and o) and mlp_bias, untied embeddings.
- qwen2: Qwen2ForCausalLM with GQA, q/k/v biases, tied embeddings, theta 1e6, eps 1e-6.
- qwen2_swa: qwen2 with sliding-window attention (window 4) in every layer;
  qwen2_swa_mixed: window 4 from layer 1 on (max_window_layers = 1), layer 0 full.
- qwen2_long: a qwen2-shaped model (320 positions) with 256 greedy steps, for the KV-cache
  format agreement over 256 steps.
- trilm: LlamaForCausalLM shaped like SpectraSuite TriLM (MHA, no biases, untied, theta 1e4,
  eps 1e-5) whose every linear layer in model.layers is exactly scale x {-1, 0, 1} with an
  f16-exact scale, saved in float16 like the "Unpacked" TriLM checkpoints. All its parameters
  are f16-exact, so the f32 reference computed here is the model the f16 file describes.

Random init uses initializer_range 0.25 and randomised biases / norm gains so that a port that
drops a bias, a norm gain or breaks attention does not still pass (a 0.02 init is nearly the
identity map and greedy decoding just repeats the last token).
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

PROMPT = [1, 17, 42, 99, 200, 7, 255, 64]
STEPS = 16


def randomise_biases_and_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + 1.0)


def make_ternary(model):
    """Every 2-D weight in model.layers becomes f16(absmean) x clamp(round(W / s), -1, 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("model.layers.") and p.dim() == 2:
                s = p.abs().mean().half().float()
                p.copy_(torch.clamp(torch.round(p / s), -1, 1) * s)
            else:
                p.copy_(p.half().float())


def write(model, out_dir, save_dtype=None, steps=STEPS):
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0]
        gen = model.generate(
            ids,
            max_new_tokens=steps,
            do_sample=False,
            use_cache=True,
            eos_token_id=None,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    step_logits = torch.stack([s[0] for s in gen.logits])
    generated = gen.sequences[0, len(PROMPT):].tolist()
    with torch.no_grad():
        nocache = model.generate(ids, max_new_tokens=steps, do_sample=False, use_cache=False,
                                 eos_token_id=None, pad_token_id=0)
    uncached = nocache[0, len(PROMPT):].tolist()
    agree = next((i for i, (a, b) in enumerate(zip(uncached, generated)) if a != b), steps)
    # Over 16 steps both must agree; over 256 steps near-ties in these random models can flip a
    # token between the two summation orders, so record where they part instead.
    assert steps > STEPS or agree == steps, "cache and no-cache greedy differ"
    logits.numpy().astype("<f4").tofile(os.path.join(out_dir, "logits_prompt.f32"))
    step_logits.numpy().astype("<f4").tofile(os.path.join(out_dir, "logits_steps.f32"))
    saved = model if save_dtype is None else model.to(save_dtype)
    saved.save_pretrained(out_dir, safe_serialization=True)
    gc = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    json.dump(
        {
            "prompt": PROMPT,
            "generated": generated,
            "vocab": int(logits.shape[-1]),
            "uncached_greedy_agreement": agree,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        open(os.path.join(out_dir, "golden.json"), "w"),
        indent=1,
    )
    print(out_dir, "generated", generated)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24,
        attention_bias=True, mlp_bias=True, max_position_embeddings=64,
        rms_norm_eps=1e-5, initializer_range=0.25,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2))
    randomise_biases_and_norms(llama)
    write(llama, os.path.join(out, "llama"))

    torch.manual_seed(1)
    qwen2 = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, initializer_range=0.25,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2))
    randomise_biases_and_norms(qwen2)
    write(qwen2, os.path.join(out, "qwen2"))

    for name, first_sliding in (("qwen2_swa", 0), ("qwen2_swa_mixed", 1)):
        torch.manual_seed(3 + first_sliding)
        swa = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-6, initializer_range=0.25,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            tie_word_embeddings=True, use_sliding_window=True, sliding_window=4,
            max_window_layers=first_sliding, bos_token_id=1, eos_token_id=2))
        assert swa.config.layer_types == ["full_attention"] * first_sliding + [
            "sliding_attention"] * (2 - first_sliding), swa.config.layer_types
        randomise_biases_and_norms(swa)
        write(swa, os.path.join(out, name))

    torch.manual_seed(5)
    long = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=320,
        rms_norm_eps=1e-6, initializer_range=0.25,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2))
    randomise_biases_and_norms(long)
    write(long, os.path.join(out, "qwen2_long"), steps=256)

    torch.manual_seed(2)
    trilm = LlamaForCausalLM(LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, attention_bias=False, mlp_bias=False,
        max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.25,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2))
    randomise_biases_and_norms(trilm)
    make_ternary(trilm)
    write(trilm, os.path.join(out, "trilm"), save_dtype=torch.float16)


if __name__ == "__main__":
    main()
