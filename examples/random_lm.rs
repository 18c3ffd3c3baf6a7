//! Writes a random language model file for speed measurements: GoldFinch, RWKV-6 or Llama of a
//! given width and depth, with every block linear layer (and GoldFinch's `W_a`, `W_b`) ternary
//! tq2_0, embedding and head f16, norms, mixes and adapters f32. Speed does not depend on
//! weight values, so random values stand in for a trained model; the logits mean nothing.
//!
//!     cargo run --release --example random_lm -- goldfinch /tmp/gf.safetensors [LAYERS WIDTH FFN VOCAB]
//!
//! Defaults: 24 layers × 2048, FFN 7168 (RWKV-6, GoldFinch) or 5632 (Llama), vocabulary 65536:
//! the 1.5B class. Used by `tools/bench/goldfinch_context.sh`.

use std::process::ExitCode;

use goldcrest::core::quant::Format;
use goldcrest::std::write::ModelWriter;
use half::f16;

/// xorshift64*: fast deterministic filler.
struct Fill(u64);

impl Fill {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `offset ± scale`.
    fn around(&mut self, offset: f32, scale: f32) -> f32 {
        offset + ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
    }

    fn f32s(&mut self, n: usize, offset: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.around(offset, scale)).collect()
    }

    /// Random rows in the tq2_0 layout (64 bytes of 2-bit codes 0..=2, then an f16 scale
    /// 1/sqrt(cols) per block of 256).
    fn ternary(&mut self, rows: usize, cols: usize) -> Vec<u8> {
        let blocks = rows * cols.div_ceil(256);
        let scale = f16::from_f32(1.0 / (cols as f32).sqrt()).to_le_bytes();
        let mut out = Vec::with_capacity(blocks * 66);
        for _ in 0..blocks {
            for _ in 0..8 {
                let r = self.next();
                for byte in 0..8 {
                    let mut packed = 0u8;
                    for k in 0..4 {
                        packed |= ((((r >> (8 * byte + 2 * k)) & 3) % 3) as u8) << (2 * k);
                    }
                    out.push(packed);
                }
            }
            out.extend_from_slice(&scale);
        }
        out
    }
}

struct Shape {
    layers: usize,
    width: usize,
    ffn: usize,
    vocab: usize,
}

type Written = Result<(), Box<dyn std::error::Error>>;

struct Builder {
    w: ModelWriter,
    fill: Fill,
}

impl Builder {
    fn f32(&mut self, name: &str, shape: &[usize], offset: f32, scale: f32) -> Written {
        let values = self.fill.f32s(shape.iter().product(), offset, scale);
        self.w.f32(name, shape, &values)?;
        Ok(())
    }

    fn f16(&mut self, name: &str, rows: usize, cols: usize, scale: f32) -> Written {
        let values: Vec<f16> = (0..rows * cols)
            .map(|_| f16::from_f32(self.fill.around(0.0, scale)))
            .collect();
        self.w.f16(name, &[rows, cols], &values)?;
        Ok(())
    }

    fn ternary(&mut self, name: &str, rows: usize, cols: usize) -> Written {
        let bytes = self.fill.ternary(rows, cols);
        self.w.packed(name, Format::Tq2_0, rows, cols, bytes)?;
        Ok(())
    }

    /// LayerNorm weight and bias.
    fn norm(&mut self, prefix: &str, c: usize) -> Written {
        self.f32(&format!("{prefix}.weight"), &[c], 1.0, 0.1)?;
        self.f32(&format!("{prefix}.bias"), &[c], 0.0, 0.1)
    }

    /// A `[1, 1, C]` token-shift mix.
    fn mix(&mut self, name: &str, c: usize) -> Written {
        self.f32(name, &[1, 1, c], 0.5, 0.5)
    }

    /// RWKV-6 channel mix of block `b` (`blocks.N.`).
    fn channel_mix(&mut self, b: &str, s: &Shape) -> Written {
        self.mix(&format!("{b}ffn.time_maa_k"), s.width)?;
        self.mix(&format!("{b}ffn.time_maa_r"), s.width)?;
        self.ternary(&format!("{b}ffn.key.weight"), s.ffn, s.width)?;
        self.ternary(&format!("{b}ffn.receptance.weight"), s.width, s.width)?;
        self.ternary(&format!("{b}ffn.value.weight"), s.width, s.ffn)
    }
}

const HEAD: usize = 64;
const MIX_RANK: usize = 32;
const DECAY_RANK: usize = 64;

fn rwkv_like(arch: &str, s: &Shape, b: &mut Builder) -> Written {
    let c = s.width;
    let goldfinch = arch == "goldfinch";
    let first_gold = if goldfinch {
        s.layers * 2 / 3
    } else {
        s.layers
    };
    b.f16("emb.weight", s.vocab, c, 1.0)?;
    b.f16("head.weight", s.vocab, c, 0.05)?;
    b.norm("blocks.0.ln0", c)?;
    b.norm("ln_out", c)?;
    for i in 0..s.layers {
        let p = format!("blocks.{i}.");
        let a = format!("{p}att.");
        b.norm(&format!("{p}ln1"), c)?;
        b.norm(&format!("{p}ln2"), c)?;
        b.norm(&format!("{a}ln_x"), c)?;
        if i < first_gold {
            let mixes: &[&str] = if goldfinch {
                &["x", "r", "k", "v", "w", "v2"]
            } else {
                &["x", "w", "k", "v", "r", "g"]
            };
            for m in mixes {
                b.mix(&format!("{a}time_maa_{m}"), c)?;
            }
            b.f32(&format!("{a}time_maa_w1"), &[c, 5 * MIX_RANK], 0.0, 0.01)?;
            b.f32(&format!("{a}time_maa_w2"), &[5, MIX_RANK, c], 0.0, 0.05)?;
            b.f32(&format!("{a}time_decay"), &[1, 1, c], -2.0, 3.0)?;
            b.f32(&format!("{a}time_decay_w1"), &[c, DECAY_RANK], 0.0, 0.01)?;
            b.f32(&format!("{a}time_decay_w2"), &[DECAY_RANK, c], 0.0, 0.05)?;
            b.f32(&format!("{a}time_faaaa"), &[c / HEAD, HEAD], 0.0, 0.5)?;
            let mut linears = vec!["receptance", "key", "value", "output"];
            if goldfinch {
                b.f32(&format!("{a}time_value2_w1"), &[c, DECAY_RANK], 0.0, 0.01)?;
                b.f32(&format!("{a}time_value2_w2"), &[DECAY_RANK, c], 0.0, 0.05)?;
            } else {
                linears.push("gate");
            }
            for l in linears {
                b.ternary(&format!("{a}{l}.weight"), c, c)?;
            }
        } else {
            let lora = (c / 16).max(64);
            for m in ["x", "q", "v_cache", "k", "v"] {
                b.mix(&format!("{a}time_maa_{m}"), c)?;
            }
            b.f32(&format!("{a}time_maa_q_w1"), &[c, MIX_RANK], 0.0, 0.01)?;
            b.f32(&format!("{a}time_maa_q_w2"), &[MIX_RANK, c], 0.0, 0.05)?;
            b.f32(&format!("{a}time_maa_kv_w1"), &[c, 2 * MIX_RANK], 0.0, 0.01)?;
            b.f32(&format!("{a}time_maa_kv_w2"), &[2, MIX_RANK, c], 0.0, 0.05)?;
            for kv in ["key", "value"] {
                b.f32(&format!("{a}time_{kv}_w1"), &[c, lora], 0.0, 0.01)?;
                b.f32(&format!("{a}time_{kv}_w2"), &[lora, c], 0.0, 0.05)?;
            }
            for n in ["ln_q", "ln_k", "ln_v"] {
                b.norm(&format!("{a}{n}"), c)?;
            }
            b.ternary(&format!("{a}query.weight"), c, c)?;
            b.ternary(&format!("{a}output.weight"), c, c)?;
        }
        b.channel_mix(&p, s)?;
    }
    if goldfinch {
        b.ternary("w_kv_cache_a.weight", c / 16, c)?;
        b.ternary("w_kv_cache_b.weight", c, c + c / 16)?;
    }
    b.w.arch(arch)?;
    for (k, v) in [
        ("n_layer", s.layers),
        ("n_embd", c),
        ("head_size", HEAD),
        ("dim_ffn", s.ffn),
        ("vocab_size", s.vocab),
    ] {
        b.w.hyperparameter(k, v)?;
    }
    Ok(())
}

fn llama(s: &Shape, b: &mut Builder) -> Written {
    let c = s.width;
    b.w.arch("llama")?;
    for (k, v) in [
        ("n_layer", s.layers.to_string()),
        ("hidden_size", c.to_string()),
        ("intermediate_size", s.ffn.to_string()),
        ("n_head", (c / HEAD).to_string()),
        ("n_kv_head", (c / HEAD).to_string()),
        ("head_dim", HEAD.to_string()),
        ("vocab_size", s.vocab.to_string()),
        ("rope_theta", "10000".into()),
        ("rms_norm_eps", "0.00001".into()),
        ("qkv_bias", "false".into()),
        ("o_bias", "false".into()),
        ("mlp_bias", "false".into()),
        ("tie_word_embeddings", "false".into()),
        ("context_length", "32768".into()),
    ] {
        b.w.hyperparameter(k, &v)?;
    }
    b.f16("model.embed_tokens.weight", s.vocab, c, 1.0)?;
    b.f16("lm_head.weight", s.vocab, c, 0.05)?;
    b.f32("model.norm.weight", &[c], 1.0, 0.1)?;
    for l in 0..s.layers {
        let p = |name: &str| format!("model.layers.{l}.{name}");
        b.f32(&p("input_layernorm.weight"), &[c], 1.0, 0.1)?;
        b.f32(&p("post_attention_layernorm.weight"), &[c], 1.0, 0.1)?;
        for (name, rows, cols) in [
            ("self_attn.q_proj.weight", c, c),
            ("self_attn.k_proj.weight", c, c),
            ("self_attn.v_proj.weight", c, c),
            ("self_attn.o_proj.weight", c, c),
            ("mlp.gate_proj.weight", s.ffn, c),
            ("mlp.up_proj.weight", s.ffn, c),
            ("mlp.down_proj.weight", c, s.ffn),
        ] {
            b.ternary(&p(name), rows, cols)?;
        }
    }
    Ok(())
}

fn run(args: &[String]) -> Written {
    let usage = "usage: random_lm goldfinch|rwkv6|llama OUT [LAYERS WIDTH FFN VOCAB]";
    let [arch, out, rest @ ..] = args else {
        return Err(usage.into());
    };
    let num = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(match rest.get(i) {
            Some(v) => v.parse()?,
            None => default,
        })
    };
    let default_ffn = if arch == "llama" { 5632 } else { 7168 };
    let shape = Shape {
        layers: num(0, 24)?,
        width: num(1, 2048)?,
        ffn: num(2, default_ffn)?,
        vocab: num(3, 65536)?,
    };
    let mut b = Builder {
        w: ModelWriter::new(),
        fill: Fill(0x9E37_79B9_7F4A_7C15),
    };
    match arch.as_str() {
        "goldfinch" | "rwkv6" => rwkv_like(arch, &shape, &mut b)?,
        "llama" => llama(&shape, &mut b)?,
        _ => return Err(usage.into()),
    }
    b.w.write_file(out)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("random_lm: {e}");
            ExitCode::FAILURE
        }
    }
}
