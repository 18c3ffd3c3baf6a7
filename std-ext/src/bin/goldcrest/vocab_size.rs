//! `goldcrest vocab-size`: the compute-optimal vocabulary size (Tao et al. 2024, three methods).

use anyhow::{Result, bail};
use clap::Args;
use goldcrest_std::tokenize::vocab_size::optimal_vocab_size;

/// Predict the optimal vocabulary size for a model.
#[derive(Args)]
pub struct VocabSizeArgs {
    /// Non-vocabulary parameters (e.g. 3e9).
    #[arg(long)]
    non_vocab_params: f64,
    /// Training FLOPs (default: the compute-optimal budget for that size).
    #[arg(long)]
    flops: Option<f64>,
}

/// Runs the subcommand.
pub fn run(args: VocabSizeArgs) -> Result<()> {
    let Some(p) = optimal_vocab_size(args.non_vocab_params, args.flops) else {
        bail!("--non-vocab-params and --flops must be positive and finite");
    };
    let out = serde_json::json!({
        "non_vocab_params": p.non_vocab_params,
        "flops": p.flops,
        "embedding_dim": p.embedding_dim,
        "isoflops": p.isoflops,
        "derivative": p.derivative,
        "parametric": p.parametric,
    });
    println!("{out}");
    Ok(())
}
