#!/usr/bin/env bash
# Decode and prefill speed and cache bytes per token at several context lengths for random
# 1.5B-shaped (24 layers x 2048) GoldFinch, RWKV-6 and Llama files, all with ternary (tq2_0)
# block linear layers, in goldcrest. Writes the files under $DIR (default /tmp), prints one JSON
# line per measurement (goldcrest bench --json), and deletes the files at the end.
#
#   tools/bench/goldfinch_context.sh [CONTEXTS...]      (default: 1024 4096 16384)
#
# Llama's KV cache is filled with random keys and values (KvCache::fill_synthetic: attention
# costs the same whatever they hold; 16k positions of f16 cache for 24 x 2048 take 3.2 GB of
# RAM); GoldFinch restores a saved context of random ids and compressed keys (which computes
# every GOLD layer's keys and values); RWKV-6 has no per-token cache and is measured once. Run
# from the repository root.
set -euo pipefail
DIR=${DIR:-/tmp}
CONTEXTS=("${@:-1024 4096 16384}")
read -r -a CONTEXTS <<< "${CONTEXTS[*]}"
PROMPT=${PROMPT:-64}
GEN=${GEN:-16}
KV=${KV:-f16}

cargo build --release -p goldcrest-std --bin goldcrest
cargo build --release -p goldcrest --example random_lm
BIN=target/release/goldcrest
trap 'rm -f "$DIR"/gc-bench-{goldfinch,rwkv6,llama}.safetensors' EXIT
for arch in goldfinch rwkv6 llama; do
    target/release/examples/random_lm "$arch" "$DIR/gc-bench-$arch.safetensors"
done

echo "# $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
bench() {
    "$BIN" bench --json --repeat 1 --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --kv "$KV" "$@"
}
bench --model "$DIR/gc-bench-rwkv6.safetensors"
for n in "${CONTEXTS[@]}"; do
    bench --model "$DIR/gc-bench-goldfinch.safetensors" --context "$n"
    bench --model "$DIR/gc-bench-llama.safetensors" --context "$n"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
