#!/usr/bin/env bash
# Builds libgoldcrest.a, compiles the C examples with -std=c99 -Wall -Wextra -Werror -pedantic,
# runs them, and runs them again under valgrind (zero errors, zero leaks).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c; mkdir -p "$out"
cargo build --release -p goldcrest-ffi
libs=$(cargo rustc -q --release -p goldcrest-ffi --crate-type staticlib -- --print native-static-libs 2>&1 \
       | sed -n 's/.*native-static-libs: //p' | tail -1)
echo "native-static-libs: $libs"
cargo run -q --release -p goldcrest-std --bin goldcrest -- convert rwkv6 \
  tests/fixtures/rwkv6/tiny_a.safetensors "$out/tiny_rwkv6.safetensors" --tokenizer world
W=(-std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude)
for p in generate errors; do
  gcc "${W[@]}" "examples/c/$p.c" target/release/libgoldcrest.a $libs -o "$out/$p"
done
VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=all --error-exitcode=1)
"$out/generate" "$out/tiny_rwkv6.safetensors" A 16
"${VG[@]}" "$out/generate" "$out/tiny_rwkv6.safetensors" A 8
"$out/errors" "$out/tiny_rwkv6.safetensors" tests/fixtures/toto/small.model.safetensors
"${VG[@]}" "$out/errors" "$out/tiny_rwkv6.safetensors" tests/fixtures/toto/small.model.safetensors
echo "C examples: PASS"
