#!/usr/bin/env bash
# Decode and prefill speed and cache bytes per token at several context lengths for random
# 1.5B-shaped (24 layers x 2048) GoldFinch, RWKV-6 and Llama files, all with ternary (tq2_0)
# block linear layers, in goldcrest. Writes the files under $DIR (default /tmp), prints one JSON
# line per measurement (goldcrest bench --json), and deletes the files at the end.
#
#   tools/bench/goldfinch_context.sh [CONTEXTS...]      (default: 1024 4096 16384)
#
# Llama fills its context with a real prefill (quadratic attention: 16k takes long on a small
# machine; set LLAMA_MAX_CONTEXT to skip longer ones); GoldFinch restores a saved context of
# random ids and compressed keys (which computes every GOLD layer's keys and values); RWKV-6 has
# no per-token cache and is measured once. Run from the repository root.
set -euo pipefail
DIR=${DIR:-/tmp}
CONTEXTS=("${@:-1024 4096 16384}")
read -r -a CONTEXTS <<< "${CONTEXTS[*]}"
LLAMA_MAX_CONTEXT=${LLAMA_MAX_CONTEXT:-4096}
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
    if [ "$n" -le "$LLAMA_MAX_CONTEXT" ]; then
        bench --model "$DIR/gc-bench-llama.safetensors" --context "$n"
    fi
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
