/* The firmware's workload, written once against the firmware flavour of the C ABI (models
 * opened in place with *_open_in, every byte of memory from the caller) and compiled twice:
 * for the Cortex-M4F firmware (main.c) and for the host (host_expected.c, which records the
 * results the firmware must reproduce). Freestanding C99: no libc, no heap. */
#ifndef GOLDCREST_FIRMWARE_WORK_H
#define GOLDCREST_FIRMWARE_WORK_H

#include <stddef.h>
#include <stdint.h>
#include "case.h"
#include "goldcrest.h"

/* Logits kept from the last generation step (the tiny test models have at most this many). */
#define WORK_MAX_VOCAB 256

/* A bump allocator over one caller buffer: the whole memory budget is visible in one place. */
typedef struct {
    unsigned char *base;
    size_t cap;
    size_t used;
} Region;

/* Carves `n` bytes starting on a GOLDCREST_MEMORY_ALIGN boundary (where session plans are
 * exact) from `r`, or returns NULL when the region is exhausted. */
unsigned char *region_take(Region *r, size_t n);

typedef struct {
    GoldcrestStatus status; /* GOLDCREST_STATUS_OK, or the first failure */
    const char *step;       /* which call failed (a static string) */
} WorkResult;

typedef struct {
    double mean[CASE_HORIZON];
    size_t plan_bytes; /* goldcrest_forecaster_memory_plan().total_bytes */
} ForecastResult;

typedef struct {
    uint32_t tokens[CASE_STEPS];
    float last_logits[WORK_MAX_VOCAB]; /* after feeding the last picked token */
    size_t vocab;
    size_t model_bytes;   /* goldcrest_lm_open_size() */
    size_t session_bytes; /* goldcrest_lm_memory_plan().total_bytes */
    size_t state_bytes;   /* goldcrest_session_state_size() */
    int resumed_equal;    /* 1 when decoding again from the restored state repeated the tokens */
} GenerateResult;

/* Mean forecast of the case series with the Toto model at `model` (`len` bytes). */
WorkResult work_forecast(const uint8_t *model, size_t len, Region *memory, ForecastResult *out);

/* Greedy generation from the case prompt, with a save/restore round trip halfway. `context`:
 * positions a decoder's KV cache holds (0 for RWKV-6). */
WorkResult work_generate(const uint8_t *model, size_t len, size_t context, Region *memory, GenerateResult *out);

#endif
