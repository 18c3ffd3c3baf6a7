#!/usr/bin/env bash
# Builds the bare-metal C firmware (arm-none-eabi-gcc, no libc) against the firmware flavour of
# libgoldcrest.a for thumbv7em-none-eabihf, computes the expected results on the host with the
# std flavour and the same C workload, and runs the firmware on QEMU's mps2-an386 (Cortex-M4F).
# Exits non-zero when the firmware's results differ from the host's.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/c-firmware; mkdir -p "$out"
here=examples/c-firmware
toto=tests/fixtures/toto/small.model.safetensors
rwkv=tests/fixtures/rwkv6/tiny_a.safetensors
qwen2=$out/tiny_qwen2.safetensors

cargo build -q --release -p goldcrest-ffi
cargo rustc -q --release -p goldcrest-ffi --no-default-features --target thumbv7em-none-eabihf \
  --crate-type staticlib

cargo run -q --release -p goldcrest-std --bin goldcrest -- convert qwen2 \
  tests/fixtures/decoder/qwen2 "$qwen2" --weights f32 > /dev/null
W=(-std=c99 -Wall -Wextra -Werror -pedantic -O2 -Iinclude -I"$here")
gcc "${W[@]}" "$here/host_expected.c" "$here/work.c" target/release/libgoldcrest.a -lm -o "$out/host_expected"
"$out/host_expected" "$toto" "$rwkv" "$qwen2" > "$out/expected.h"

ARM=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16)
arm-none-eabi-gcc "${ARM[@]}" "${W[@]}" -I"$out" -ffreestanding -ffunction-sections -fdata-sections \
  -DTOTO_MODEL_PATH="\"$toto\"" -DRWKV_MODEL_PATH="\"$rwkv\"" -DDECODER_MODEL_PATH="\"$qwen2\"" \
  -nostdlib -T "$here/link.ld" -Wl,--gc-sections -Wl,--no-warn-rwx-segments -Wl,--no-warn-execstack -Wl,-Map="$out/firmware.map" \
  "$here/startup.S" "$here/models.S" "$here/main.c" "$here/work.c" \
  target/thumbv7em-none-eabihf/release/libgoldcrest.a -lgcc -o "$out/firmware.elf"
read -r text data bss _ < <(arm-none-eabi-size -B "$out/firmware.elf" | awk 'NR == 2')
echo "firmware.elf: flash $((text + data)) B (code and models; text $text, data $data), static RAM $((data + bss)) B"
timeout 300 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -semihosting-config enable=on,target=native -kernel "$out/firmware.elf"
