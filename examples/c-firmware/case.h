/* The work the firmware does, shared by the firmware (main.c) and the host program that
 * computes the expected results (host_expected.c), so both run exactly the same requests.
 * Freestanding C99: no libc, no libm. */
#ifndef GOLDCREST_FIRMWARE_CASE_H
#define GOLDCREST_FIRMWARE_CASE_H

#include <stddef.h>
#include <stdint.h>

/* Forecast: one sensor-like series (a daily cycle of 12 readings on a slow upward trend, with
 * one reading missing), CASE_CONTEXT steps of history, CASE_HORIZON steps ahead. */
#define CASE_CONTEXT 64
#define CASE_HORIZON 8
#define CASE_MISSING_STEP 37

static inline double case_value(size_t t) {
    static const double cycle[12] = {18.0, 18.4, 19.5, 21.2, 23.0, 24.1,
                                     24.6, 24.0, 22.6, 20.9, 19.6, 18.6};
    return cycle[t % 12] + 0.03 * (double)t;
}

/* Text generation with RWKV-6 and with a Qwen2 decoder (KV cache of CASE_DECODER_CONTEXT
 * positions): feed a prompt, then pick CASE_STEPS tokens greedily. Halfway, the state (RWKV-6's
 * recurrent state, the decoder's KV cache) is saved; restoring it and decoding again must
 * repeat the second half. */
#define CASE_DECODER_CONTEXT 32
#define CASE_PROMPT_LEN 4
#define CASE_STEPS 12
static const uint32_t case_prompt[CASE_PROMPT_LEN] = {1, 2, 3, 7};

#endif
