/* The C ABI's error paths, from C99: every bad call must return its status, never crash.
 * usage: errors RWKV6_MODEL TOTO_MODEL */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "example.h"

int main(int argc, char **argv) {
    size_t lm_len = 0, toto_len = 0, i;
    unsigned char *lm_bytes, *toto_bytes, *memory;
    GoldcrestLm *lm = NULL, *bad = NULL;
    GoldcrestForecaster *fc = NULL;
    GoldcrestSession *session = NULL;
    GoldcrestMemoryPlan plan;
    GoldcrestSampler sampler;
    GoldcrestForecastRequest req;
    GoldcrestForecastOutput out;
    double values[64], levels[3] = {0.1, 0.5, 0.9}, mean[8];
    float quant[8 * 3], logits[1];
    uint32_t token = 1, next;
    unsigned char storage[16];

    if (argc < 3) { fprintf(stderr, "usage: errors RWKV6_MODEL TOTO_MODEL\n"); return 2; }
    lm_bytes = slurp(argv[1], &lm_len);
    toto_bytes = slurp(argv[2], &toto_len);
    if (!lm_bytes || !toto_bytes) { fprintf(stderr, "cannot read the models\n"); return 2; }

    expect(goldcrest_lm_info(NULL, NULL), GOLDCREST_STATUS_NULL_POINTER, "null handle");
    expect(goldcrest_lm_open_buffer(lm_bytes, lm_len, NULL), GOLDCREST_STATUS_NULL_POINTER, "null out-parameter");
    expect(goldcrest_lm_open_buffer(lm_bytes, lm_len / 2, &bad), GOLDCREST_STATUS_BAD_MODEL, "truncated model buffer");
    expect(goldcrest_lm_open_buffer(lm_bytes, 3, &bad), GOLDCREST_STATUS_BAD_MODEL, "3-byte model buffer");
    expect(goldcrest_lm_open_buffer(toto_bytes, toto_len, &bad), GOLDCREST_STATUS_WRONG_MODEL_KIND, "forecaster opened as a language model");
    expect(goldcrest_forecaster_open_buffer(lm_bytes, lm_len, &fc), GOLDCREST_STATUS_WRONG_MODEL_KIND, "language model opened as a forecaster");
    expect(goldcrest_lm_open_file("/nonexistent/model.safetensors", &bad), GOLDCREST_STATUS_IO, "missing file");
    expect(goldcrest_lm_open_in(lm_bytes, lm_len, storage, sizeof storage, &bad), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "open_in with 16 bytes");
    if (bad) { fprintf(stderr, "FAIL: a failed open wrote its out-parameter\n"); failures++; }

    expect(goldcrest_lm_open_buffer(lm_bytes, lm_len, &lm), GOLDCREST_STATUS_OK, "open from buffer");
    expect(goldcrest_lm_memory_plan(lm, 0, 0, &plan), GOLDCREST_STATUS_INVALID_ARGUMENT, "plan for 0 tokens");
    expect(goldcrest_lm_memory_plan(lm, 4, 0, &plan), GOLDCREST_STATUS_OK, "plan");
    /* malloc aligns to 16: GOLDCREST_MEMORY_ALIGN - 1 more bytes let the session start on a
     * 64-byte boundary (examples/c/decoder.c tests the exact size at an aligned address). */
    memory = malloc(plan.total_bytes + GOLDCREST_MEMORY_ALIGN - 1);
    expect(goldcrest_session_create(lm, 4, 0, memory, plan.total_bytes / 2, &session), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "too-small session memory");
    expect(goldcrest_session_create(lm, 4, 0, memory + 1, plan.total_bytes - 1, &session), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "memory one byte short");
    expect(goldcrest_session_create(lm, 4, 0, memory, plan.total_bytes + GOLDCREST_MEMORY_ALIGN - 1, &session), GOLDCREST_STATUS_OK, "session");
    expect(goldcrest_session_feed((GoldcrestSession *)(void *)lm, &token, 1), GOLDCREST_STATUS_WRONG_HANDLE, "model passed as a session");
    expect(goldcrest_session_logits(session, logits, 1), GOLDCREST_STATUS_NO_LOGITS, "logits before feeding");
    token = 1000000;
    expect(goldcrest_session_feed(session, &token, 1), GOLDCREST_STATUS_INVALID_ARGUMENT, "token outside the vocabulary");
    expect(goldcrest_session_feed(session, NULL, 1), GOLDCREST_STATUS_NULL_POINTER, "NULL tokens");
    token = 1;
    expect(goldcrest_session_feed(session, &token, 1), GOLDCREST_STATUS_OK, "feed");
    expect(goldcrest_session_logits(session, logits, 1), GOLDCREST_STATUS_LENGTH_MISMATCH, "logits buffer of the wrong size");
    goldcrest_sampler_default(&sampler);
    sampler.temperature = (float)NAN;
    expect(goldcrest_session_sample(session, &sampler, &next), GOLDCREST_STATUS_INVALID_ARGUMENT, "NaN temperature");
    sampler.struct_size = 4;
    expect(goldcrest_session_sample(session, &sampler, &next), GOLDCREST_STATUS_INVALID_ARGUMENT, "sampler struct_size too small");
    expect(goldcrest_session_restore_state(session, lm_bytes, 100), GOLDCREST_STATUS_BAD_STATE, "restore garbage state");
    {
        /* Save, run on, restore: the logits after the same next token must match exactly. */
        static unsigned char saved[1 << 16];
        static float a[4096], b[4096];
        GoldcrestLmInfo info;
        size_t size = 0, written = 0;
        uint32_t two = 2;
        goldcrest_lm_info(lm, &info);
        expect(goldcrest_session_state_size(session, &size), GOLDCREST_STATUS_OK, "state size");
        expect(goldcrest_session_save_state(session, saved, 8, &written), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "save into 8 bytes");
        expect(goldcrest_session_save_state(session, saved, sizeof saved, &written), GOLDCREST_STATUS_OK, "save state");
        goldcrest_session_feed(session, &two, 1);
        goldcrest_session_logits(session, a, info.vocab_size);
        goldcrest_session_feed(session, &two, 1);
        expect(goldcrest_session_restore_state(session, saved, written), GOLDCREST_STATUS_OK, "restore state");
        goldcrest_session_feed(session, &two, 1);
        goldcrest_session_logits(session, b, info.vocab_size);
        if (info.vocab_size > 4096 || memcmp(a, b, info.vocab_size * sizeof(float)) != 0) { fprintf(stderr, "FAIL restored state differs\n"); failures++; }
    }
    expect(goldcrest_session_free(session), GOLDCREST_STATUS_OK, "free session");
    expect(goldcrest_session_free(session), GOLDCREST_STATUS_WRONG_HANDLE, "double free of a session");
    free(memory);
    expect(goldcrest_lm_free(lm), GOLDCREST_STATUS_OK, "free model");
    if (strcmp(goldcrest_status_str(-7), "unknown status") != 0) { fprintf(stderr, "FAIL status_str(-7)\n"); failures++; }

    expect(goldcrest_forecaster_open_buffer(toto_bytes, toto_len, &fc), GOLDCREST_STATUS_OK, "open forecaster");
    for (i = 0; i < 64; i++) values[i] = 10.0 + sin((double)i * 0.5);
    memset(&req, 0, sizeof req);
    req.struct_size = sizeof req;
    req.values = values; req.variates = 1; req.context = 64; req.horizon = 8;
    req.samples = 32; req.seed = 7; req.quantiles = levels; req.n_quantiles = 3;
    out.mean = mean; out.quantiles = quant; out.samples = NULL;
    expect(goldcrest_forecaster_memory_plan(fc, &req, &plan), GOLDCREST_STATUS_OK, "forecast plan");
    memory = malloc(plan.total_bytes);
    expect(goldcrest_forecast(fc, &req, memory, plan.total_bytes - 64, &out), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "too-small forecast memory");
    values[3] = NAN;
    expect(goldcrest_forecast(fc, &req, memory, plan.total_bytes, &out), GOLDCREST_STATUS_OK, "forecast (a NaN value is missing, not fatal)");
    for (i = 0; i < 8; i++) if (!isfinite(mean[i]) || !(quant[i * 3] <= quant[i * 3 + 2])) { fprintf(stderr, "FAIL forecast values\n"); failures++; break; }
    levels[1] = NAN;
    expect(goldcrest_forecast(fc, &req, memory, plan.total_bytes, &out), GOLDCREST_STATUS_INVALID_ARGUMENT, "NaN quantile level");
    levels[1] = 0.5; values[5] = 1e31;
    expect(goldcrest_forecast(fc, &req, memory, plan.total_bytes, &out), GOLDCREST_STATUS_INVALID_ARGUMENT, "value of magnitude 1e31");
    free(memory);
    expect(goldcrest_forecaster_free(fc), GOLDCREST_STATUS_OK, "free forecaster");

    free(lm_bytes);
    free(toto_bytes);
    printf(failures ? "FAILED: %d\n" : "all error paths behave (%d failures)\n", failures);
    return failures ? 1 : 0;
}
