/* Bare-metal C firmware for a Cortex-M4F (QEMU mps2-an386): no libc, no heap, no RTOS. It links
 * the firmware flavour of goldcrest (libgoldcrest.a built for thumbv7em-none-eabihf, no_std, no
 * allocator), reads three models in place from flash, runs a Toto forecast and greedy
 * generations with RWKV-6 and a Qwen2 decoder (each saving and restoring its state) in one
 * static arena, and checks them against the results the host computed with the same code (expected.h, written by host_expected.c). Output and the exit status go through
 * semihosting; any mismatch exits with status 1.
 *
 * Tolerance: the firmware runs goldcrest's scalar kernels, the host its SIMD kernels, which sum
 * in another order; forecasts and logits must agree within 1e-4 * (1 + |host value|), and the
 * greedy tokens exactly. */
#include <stddef.h>
#include <stdint.h>
#include "goldcrest.h"
#include "work.h"
#include "expected.h"

#define TOLERANCE 1e-4
#define ARENA_BYTES (64u * 1024u)
#define STACK_PAINT 0x5AA5C33Cu

int semihost_call(int operation, const void *argument);
extern const uint8_t toto_model[], rwkv_model[], decoder_model[];
extern const uint32_t toto_model_len, rwkv_model_len, decoder_model_len;
extern uint32_t _ebss[], _estack[];

static unsigned char arena[ARENA_BYTES];
static int failures;
static double worst; /* largest |firmware - host| / (1 + |host|) seen */

/* ---- console: a few formatters, since there is no printf ---- */
static void put(const char *s) { semihost_call(0x04 /* SYS_WRITE0 */, s); }

static void put_uint(size_t v) {
    char buf[24];
    int i = (int)sizeof buf - 1;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 0);
    put(buf + i);
}

static void put_fixed(double v, unsigned decimals) { /* e.g. -12.3456 */
    double scale = 1.0;
    unsigned d;
    uint64_t whole, frac;
    char buf[24];
    int i;
    if (v != v) { put("nan"); return; }
    if (v < 0) { put("-"); v = -v; }
    for (d = 0; d < decimals; d++) scale *= 10.0;
    whole = (uint64_t)(v * scale + 0.5);
    frac = whole % (uint64_t)scale;
    put_uint((size_t)(whole / (uint64_t)scale));
    put(".");
    buf[i = (int)decimals] = 0;
    while (i > 0) { buf[--i] = (char)('0' + frac % 10); frac /= 10; }
    put(buf);
}

void semihost_exit(int status) {
    uint32_t block[2];
    block[0] = 0x20026; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)status;
    semihost_call(0x20 /* SYS_EXIT_EXTENDED */, block);
    for (;;) {}
}

/* The library calls this only on an internal bug (a Rust panic); it must not return. */
void goldcrest_platform_abort(void) {
    put("goldcrest_platform_abort: internal error in goldcrest\n");
    semihost_exit(101);
}

static double magnitude(double v) { return v < 0 ? -v : v; }

static void check_close(const char *what, size_t i, double got, double want) {
    double deviation = magnitude(got - want) / (1.0 + magnitude(want));
    if (deviation > worst || deviation != deviation) worst = deviation;
    if (deviation <= TOLERANCE) return;
    put("MISMATCH ");
    put(what);
    put("[");
    put_uint(i);
    put("]: firmware ");
    put_fixed(got, 6);
    put(", host ");
    put_fixed(want, 6);
    put("\n");
    failures++;
}

static int report(WorkResult r) {
    if (r.status == GOLDCREST_STATUS_OK) return 1;
    put("FAILED in ");
    put(r.step);
    put(": ");
    put(goldcrest_status_str((int32_t)r.status));
    put("\n");
    return 0;
}

static void check_generation(const char *label, const GenerateResult *g, const uint32_t *tokens,
                             const float *logits, size_t vocab) {
    size_t i;
    put(label);
    put(" greedy tokens:");
    for (i = 0; i < CASE_STEPS; i++) {
        put(" ");
        put_uint(g->tokens[i]);
        if (g->tokens[i] != tokens[i]) {
            put(" (host: ");
            put_uint(tokens[i]);
            put(")");
            failures++;
        }
    }
    put("\n");
    if (!g->resumed_equal) { put("MISMATCH: decoding from the restored state differs\n"); failures++; }
    if (g->vocab != vocab) { put("MISMATCH: vocabulary size\n"); failures++; }
    for (i = 0; i < g->vocab && i < vocab; i++) check_close("logits", i, g->last_logits[i], logits[i]);
    put("  memory: model handle ");
    put_uint(g->model_bytes);
    put(" B, session ");
    put_uint(g->session_bytes);
    put(" B, saved state ");
    put_uint(g->state_bytes);
    put(" B\n");
}

/* Fills the free stack below the current frame with a pattern; the untouched part is counted
 * at the end to measure the deepest stack use. */
static void paint_stack(void) {
    volatile uint32_t *p = _ebss;
    volatile uint32_t here = 0;
    while ((uintptr_t)p + 256 < (uintptr_t)&here) *p++ = STACK_PAINT;
}

static size_t stack_used(void) {
    const volatile uint32_t *p = _ebss;
    while (p < _estack && *p == STACK_PAINT) p++;
    return (size_t)((uintptr_t)_estack - (uintptr_t)p);
}

int main(void) {
    static ForecastResult forecast;
    static GenerateResult rwkv, decoder;
    Region region;
    size_t i, forecast_used, rwkv_used;

    paint_stack();
    put("goldcrest ");
    put(goldcrest_version_string());
    put(" on a Cortex-M4F, firmware flavour (no_std, no allocator)\n");
    if (goldcrest_version() != GOLDCREST_VERSION) { put("header/library version mismatch\n"); return 1; }
    region.base = arena;
    region.cap = sizeof arena;
    region.used = 0;

    if (!report(work_forecast(toto_model, toto_model_len, &region, &forecast))) return 1;
    forecast_used = region.used;
    put("Toto forecast, ");
    put_uint(CASE_CONTEXT);
    put(" steps of history (one missing), next ");
    put_uint(CASE_HORIZON);
    put(":");
    for (i = 0; i < CASE_HORIZON; i++) {
        put(" ");
        put_fixed(forecast.mean[i], 3);
        check_close("forecast", i, forecast.mean[i], expected_mean[i]);
    }
    put("\n");

    put("  memory: plan ");
    put_uint(forecast.plan_bytes);
    put(" B + handle ");
    put_uint(GOLDCREST_FORECASTER_SIZE);
    put(" B\n");

    region.used = 0; /* each run reuses the arena: the previous one is done with it */
    if (!report(work_generate(rwkv_model, rwkv_model_len, 0, &region, &rwkv))) return 1;
    rwkv_used = region.used;
    check_generation("RWKV-6", &rwkv, expected_rwkv_tokens, expected_rwkv_logits, EXPECTED_RWKV_VOCAB);

    region.used = 0;
    if (!report(work_generate(decoder_model, decoder_model_len, CASE_DECODER_CONTEXT, &region, &decoder))) return 1;
    check_generation("Qwen2 decoder", &decoder, expected_decoder_tokens, expected_decoder_logits,
                     EXPECTED_DECODER_VOCAB);

    put("arena ");
    put_uint(sizeof arena);
    put(" B, used at most: forecast ");
    put_uint(forecast_used);
    put(" B, RWKV-6 ");
    put_uint(rwkv_used);
    put(" B, decoder ");
    put_uint(region.used);
    put(" B; deepest stack ");
    put_uint(stack_used());
    put(" B\nmodels in flash: Toto ");
    put_uint(toto_model_len);
    put(" B, RWKV-6 ");
    put_uint(rwkv_model_len);
    put(" B, Qwen2 ");
    put_uint(decoder_model_len);
    put(" B\nlargest deviation from the host: ");
    put_fixed(worst, 12);
    put(" (relative, tolerance ");
    put_fixed(TOLERANCE, 6);
    put(")\n");
    put(failures ? "FAIL: results differ from the host's\n" : "PASS: forecast, tokens and logits match the host's\n");
    return failures ? 1 : 0;
}
