#!/usr/bin/env bash
# Builds libgoldcrest.a, compiles the C examples (-std=c99: generation, forecast, decoder with
# KV-cache save/restore, error paths) and the C++ one (-std=c++17), all
# with -Wall -Wextra -Werror -pedantic, checks the header alone as C99/C11/C++11/C++17, runs
# every program, and runs each again under valgrind (zero errors, zero leaks).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c; mkdir -p "$out"
cargo build --release -p goldcrest-ffi
libs=$(cargo rustc -q --release -p goldcrest-ffi --crate-type staticlib -- --print native-static-libs 2>&1 \
       | sed -n 's/.*native-static-libs: //p' | tail -1)
echo "native-static-libs: $libs"
cargo run -q --release -p goldcrest-std --bin goldcrest -- convert rwkv6 \
  tests/fixtures/rwkv6/tiny_a.safetensors "$out/tiny_rwkv6.safetensors" --tokenizer world
cargo run -q --release -p goldcrest-std --bin goldcrest -- convert qwen2 \
  tests/fixtures/decoder/qwen2 "$out/tiny_qwen2.safetensors" --weights f32
W=(-std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude)
for std in c99 c11; do
  printf '#include "goldcrest.h"\n#include "goldcrest.h"\nint main(void) { return goldcrest_version() != GOLDCREST_VERSION; }\n' \
    | gcc -x c -std=$std -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only -
done
for std in c++11 c++17; do
  printf '#include "goldcrest.h"\nint main() { return goldcrest_version() != GOLDCREST_VERSION; }\n' \
    | g++ -x c++ -std=$std -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only -
done
for p in generate errors forecast decoder; do
  gcc "${W[@]}" "examples/c/$p.c" target/release/libgoldcrest.a $libs -o "$out/$p"
done
g++ -std=c++17 "${W[@]:1}" examples/cpp/generate.cpp target/release/libgoldcrest.a $libs -o "$out/generate_cpp"
VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=all --error-exitcode=1)
"$out/generate" "$out/tiny_rwkv6.safetensors" A 16
"${VG[@]}" "$out/generate" "$out/tiny_rwkv6.safetensors" A 8
"$out/errors" "$out/tiny_rwkv6.safetensors" tests/fixtures/toto/small.model.safetensors
"${VG[@]}" "$out/errors" "$out/tiny_rwkv6.safetensors" tests/fixtures/toto/small.model.safetensors
gf=tests/fixtures/goldfinch/tiny_a.safetensors
"$out/decoder" "$out/tiny_qwen2.safetensors" "$out/tiny_rwkv6.safetensors" "$gf"
"${VG[@]}" "$out/decoder" "$out/tiny_qwen2.safetensors" "$out/tiny_rwkv6.safetensors" "$gf" > /dev/null
"$out/forecast" tests/fixtures/toto/small.model.safetensors examples/c/hourly.csv 6
"${VG[@]}" "$out/forecast" tests/fixtures/toto/small.model.safetensors examples/c/hourly.csv 6
"$out/generate_cpp" "$out/tiny_rwkv6.safetensors" A 12
"${VG[@]}" "$out/generate_cpp" "$out/tiny_rwkv6.safetensors" A 4
echo "C/C++ examples: PASS"
