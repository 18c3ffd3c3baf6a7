/* A LLaMA/Qwen2 decoder through the C ABI, from C99: open from a buffer, plan, a session in
 * exactly the planned memory, greedy decoding, and saving/restoring the KV cache to a caller
 * buffer; restoring then decoding must equal decoding without interruption. Then the error
 * paths of these calls; then the same round trip with GoldFinch, whose state is its at-rest
 * cache. Exits non-zero on any failure.
 * usage: decoder DECODER_MODEL RWKV6_MODEL GOLDFINCH_MODEL */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "example.h"

#define STEPS 8
static const uint32_t prompt[8] = {1, 17, 42, 99, 200, 7, 255, 64};

/* Session memory: malloc aligns to 16, so ask for GOLDCREST_MEMORY_ALIGN - 1 more and start at
 * the first 64-byte boundary; `exact` is then the aligned start of `total` bytes. */
typedef struct { unsigned char *block, *exact; } Memory;

static Memory memory_for(size_t total) {
    Memory m;
    m.block = malloc(total + GOLDCREST_MEMORY_ALIGN - 1);
    m.exact = m.block ? m.block + (GOLDCREST_MEMORY_ALIGN - (uintptr_t)m.block % GOLDCREST_MEMORY_ALIGN) % GOLDCREST_MEMORY_ALIGN
                      : NULL;
    return m;
}

static GoldcrestSession *session_for(GoldcrestLm *lm, size_t context, Memory *m) {
    GoldcrestMemoryPlan plan;
    GoldcrestSession *s = NULL;
    expect(goldcrest_lm_memory_plan(lm, 8, context, &plan), GOLDCREST_STATUS_OK, "memory plan");
    *m = memory_for(plan.total_bytes);
    if (!m->block) return NULL;
    expect(goldcrest_session_create(lm, 8, context, m->exact, plan.total_bytes, &s), GOLDCREST_STATUS_OK,
           "session in exactly total_bytes");
    return s;
}

/* Feeds `n` tokens, then picks `steps` greedily, feeding each but the last. */
static void decode(GoldcrestSession *s, const uint32_t *feed, size_t n, uint32_t *out, size_t steps) {
    GoldcrestSampler greedy;
    size_t i;
    goldcrest_sampler_default(&greedy);
    greedy.temperature = 0.0f;
    if (goldcrest_session_feed(s, feed, n) != GOLDCREST_STATUS_OK) { failures++; return; }
    for (i = 0; i < steps; i++) {
        if (i > 0 && goldcrest_session_feed(s, &out[i - 1], 1) != GOLDCREST_STATUS_OK) { failures++; return; }
        if (goldcrest_session_sample(s, &greedy, &out[i]) != GOLDCREST_STATUS_OK) { failures++; return; }
    }
}

/* GoldFinch: the same save/restore round trip; its saved state is the at-rest cache (token ids
 * and compressed keys), from which restore rebuilds the working cache. */
static void goldfinch(const unsigned char *bytes, size_t len, const unsigned char *decoder_state, size_t decoder_size) {
    GoldcrestLm *lm = NULL;
    GoldcrestLmInfo info;
    GoldcrestMemoryPlan plan;
    GoldcrestSession *s = NULL, *r = NULL;
    Memory m1 = {0, 0}, m2 = {0, 0};
    uint32_t gf_prompt[5] = {3, 1, 4, 1, 5}, head[3], tail[STEPS], again[STEPS];
    unsigned char *saved;
    size_t size = 0, written = 0;

    expect(goldcrest_lm_open_buffer(bytes, len, &lm), GOLDCREST_STATUS_OK, "open GoldFinch from a buffer");
    expect(goldcrest_lm_info(lm, &info), GOLDCREST_STATUS_OK, "GoldFinch info");
    expect_true(info.kind == GOLDCREST_LM_KIND_GOLD_FINCH, "kind is GoldFinch");
    expect(goldcrest_lm_memory_plan(lm, 1, 0, &plan), GOLDCREST_STATUS_INVALID_ARGUMENT, "GoldFinch plan with context 0");
    s = session_for(lm, 32, &m1);
    r = session_for(lm, 32, &m2);
    if (!s || !r) { failures++; return; }
    decode(s, gf_prompt, 5, head, 3);
    expect(goldcrest_session_state_size(s, &size), GOLDCREST_STATUS_OK, "GoldFinch state size");
    printf("     GoldFinch at-rest state after 7 tokens: %zu B\n", size);
    saved = malloc(size);
    if (!saved) { failures++; return; }
    expect(goldcrest_session_save_state(s, saved, size, &written), GOLDCREST_STATUS_OK, "save GoldFinch state");
    decode(s, &head[2], 1, tail, STEPS);
    expect(goldcrest_session_restore_state(r, saved, size - 4), GOLDCREST_STATUS_BAD_STATE, "truncated GoldFinch state");
    expect(goldcrest_session_restore_state(r, decoder_state, decoder_size), GOLDCREST_STATUS_BAD_STATE,
           "decoder state into GoldFinch");
    expect(goldcrest_session_restore_state(r, saved, size), GOLDCREST_STATUS_OK, "restore into another session");
    decode(r, &head[2], 1, again, STEPS);
    expect_true(memcmp(again, tail, sizeof tail) == 0, "GoldFinch: restore, then decode = uninterrupted decoding");
    goldcrest_session_free(s);
    goldcrest_session_free(r);
    expect(goldcrest_lm_free(lm), GOLDCREST_STATUS_OK, "free GoldFinch");
    free(saved); free(m1.block); free(m2.block);
}

int main(int argc, char **argv) {
    size_t dec_len = 0, rwkv_len = 0, gf_len = 0, size = 0, written = 0, rwkv_size = 0, grown = 0, i;
    unsigned char *dec_bytes, *rwkv_bytes, *gf_bytes, *saved = NULL, *rwkv_saved = NULL;
    GoldcrestLm *lm = NULL, *rwkv = NULL;
    GoldcrestSession *s = NULL, *longer = NULL, *short_ctx = NULL, *rs = NULL;
    GoldcrestLmInfo info;
    GoldcrestMemoryPlan plan;
    GoldcrestSampler bad;
    Memory m1 = {0, 0}, m2 = {0, 0}, m3 = {0, 0}, m4 = {0, 0};
    uint32_t head[4], tail[STEPS], again[STEPS], resumed[STEPS], token;

    if (argc < 4) { fprintf(stderr, "usage: decoder DECODER_MODEL RWKV6_MODEL GOLDFINCH_MODEL\n"); return 2; }
    dec_bytes = slurp(argv[1], &dec_len);
    rwkv_bytes = slurp(argv[2], &rwkv_len);
    gf_bytes = slurp(argv[3], &gf_len);
    if (!dec_bytes || !rwkv_bytes || !gf_bytes) { fprintf(stderr, "cannot read the models\n"); return 2; }

    expect(goldcrest_lm_open_buffer(dec_bytes, dec_len, &lm), GOLDCREST_STATUS_OK, "open decoder from a buffer");
    expect(goldcrest_lm_info(lm, &info), GOLDCREST_STATUS_OK, "info");
    expect_true(info.kind == GOLDCREST_LM_KIND_QWEN2 || info.kind == GOLDCREST_LM_KIND_LLAMA, "kind is a decoder");
    printf("decoder: vocabulary %zu, %zu layers, max context %zu, weights %zu B in place\n", info.vocab_size,
           info.n_layer, info.max_context, info.weight_bytes);

    /* The plan is exact: one byte less fails, and so does the right size one byte off the boundary. */
    expect(goldcrest_lm_memory_plan(lm, 8, 32, &plan), GOLDCREST_STATUS_OK, "plan for context 32");
    m1 = memory_for(plan.total_bytes);
    if (!m1.block) return 2;
    expect(goldcrest_session_create(lm, 8, 32, m1.exact, plan.total_bytes - 1, &s), GOLDCREST_STATUS_BUFFER_TOO_SMALL,
           "session memory one byte short of the plan");
    expect(goldcrest_session_create(lm, 8, 32, m1.exact + 1, plan.total_bytes - 1, &s),
           GOLDCREST_STATUS_BUFFER_TOO_SMALL, "unaligned memory without the extra bytes");
    expect(goldcrest_session_create(lm, 8, 0, m1.exact, plan.total_bytes, &s), GOLDCREST_STATUS_INVALID_ARGUMENT,
           "decoder session with context 0");
    expect(goldcrest_session_create(lm, 8, 32, m1.exact, plan.total_bytes, &s), GOLDCREST_STATUS_OK,
           "session in exactly total_bytes");

    /* Prompt, 3 fed tokens and a 4th picked: the checkpoint. */
    decode(s, prompt, 8, head, 4);
    expect(goldcrest_session_state_size(s, &size), GOLDCREST_STATUS_OK, "state size");
    printf("     saved KV cache after 11 positions: %zu B\n", size);
    saved = malloc(size);
    if (!saved) return 2;
    expect(goldcrest_session_save_state(s, saved, 16, &written), GOLDCREST_STATUS_BUFFER_TOO_SMALL, "save into 16 bytes");
    expect_true(written == size, "BUFFER_TOO_SMALL reports the size needed");
    expect(goldcrest_session_save_state(NULL, saved, size, &written), GOLDCREST_STATUS_NULL_POINTER, "save a NULL session");
    expect(goldcrest_session_save_state(s, saved, size, NULL), GOLDCREST_STATUS_NULL_POINTER, "save without *written");
    expect(goldcrest_session_save_state(s, saved, size, &written), GOLDCREST_STATUS_OK, "save the KV cache");

    decode(s, &head[3], 1, tail, STEPS);
    expect(goldcrest_session_state_size(s, &grown), GOLDCREST_STATUS_OK, "state size later");
    expect_true(grown > size, "the saved KV cache grows with the positions fed");

    expect(goldcrest_session_restore_state(s, saved, size), GOLDCREST_STATUS_OK, "restore into the same session");
    decode(s, &head[3], 1, again, STEPS);
    expect_true(memcmp(again, tail, sizeof tail) == 0, "restore, then decode = uninterrupted decoding");

    longer = session_for(lm, 64, &m2);
    expect(goldcrest_session_restore_state(longer, saved, size), GOLDCREST_STATUS_OK, "restore into a longer session");
    decode(longer, &head[3], 1, resumed, STEPS);
    expect_true(memcmp(resumed, tail, sizeof tail) == 0, "... and it decodes the same tokens");
    printf("     tokens after the checkpoint:");
    for (i = 0; i < STEPS; i++) printf(" %u", (unsigned)tail[i]);
    printf("\n");

    /* Error paths of restore; none of them may change the session. */
    short_ctx = session_for(lm, 8, &m3);
    expect(goldcrest_session_restore_state(short_ctx, saved, size), GOLDCREST_STATUS_CONTEXT_FULL,
           "restore 11 positions into a context of 8");
    expect(goldcrest_session_restore_state(s, saved, size - 1), GOLDCREST_STATUS_BAD_STATE, "truncated state");
    expect(goldcrest_session_restore_state(s, saved, 10), GOLDCREST_STATUS_BAD_STATE, "10-byte state");
    saved[size / 2] ^= 0x40;
    expect(goldcrest_session_restore_state(s, saved, size), GOLDCREST_STATUS_BAD_STATE, "corrupted state (checksum)");
    saved[size / 2] ^= 0x40;
    expect(goldcrest_session_restore_state(s, NULL, size), GOLDCREST_STATUS_NULL_POINTER, "NULL state buffer");
    expect(goldcrest_session_restore_state(NULL, saved, size), GOLDCREST_STATUS_NULL_POINTER, "restore into a NULL session");
    expect(goldcrest_session_restore_state((GoldcrestSession *)(void *)lm, saved, size), GOLDCREST_STATUS_WRONG_HANDLE,
           "model passed as a session");
    expect(goldcrest_session_state_size(NULL, &size), GOLDCREST_STATUS_NULL_POINTER, "state size of a NULL session");

    /* Another model kind's state. */
    expect(goldcrest_lm_open_buffer(rwkv_bytes, rwkv_len, &rwkv), GOLDCREST_STATUS_OK, "open RWKV-6");
    rs = session_for(rwkv, 0, &m4);
    token = 1;
    expect(goldcrest_session_feed(rs, &token, 1), GOLDCREST_STATUS_OK, "feed RWKV-6");
    expect(goldcrest_session_state_size(rs, &rwkv_size), GOLDCREST_STATUS_OK, "RWKV-6 state size");
    rwkv_saved = malloc(rwkv_size);
    if (!rwkv_saved) return 2;
    expect(goldcrest_session_save_state(rs, rwkv_saved, rwkv_size, &written), GOLDCREST_STATUS_OK, "save RWKV-6 state");
    expect(goldcrest_session_restore_state(s, rwkv_saved, rwkv_size), GOLDCREST_STATUS_BAD_STATE,
           "RWKV-6 state into a decoder session");
    expect(goldcrest_session_restore_state(rs, saved, size), GOLDCREST_STATUS_BAD_STATE, "decoder state into RWKV-6");

    /* NaN sampler settings and a full context. */
    goldcrest_sampler_default(&bad);
    bad.temperature = 0.0f / 0.0f;
    expect(goldcrest_session_sample(s, &bad, &token), GOLDCREST_STATUS_INVALID_ARGUMENT, "NaN temperature");
    expect(goldcrest_session_reset(short_ctx), GOLDCREST_STATUS_OK, "reset");
    expect(goldcrest_session_feed(short_ctx, prompt, 8), GOLDCREST_STATUS_OK, "fill a context of 8");
    expect(goldcrest_session_feed(short_ctx, prompt, 1), GOLDCREST_STATUS_CONTEXT_FULL, "a 9th position");

    /* The failed restores left `s` as the successful one made it: the same tokens again. */
    expect(goldcrest_session_restore_state(s, saved, size), GOLDCREST_STATUS_OK, "restore again");
    decode(s, &head[3], 1, again, STEPS);
    expect_true(memcmp(again, tail, sizeof tail) == 0, "still decodes the same tokens");

    goldfinch(gf_bytes, gf_len, saved, size);

    goldcrest_session_free(s);
    goldcrest_session_free(longer);
    goldcrest_session_free(short_ctx);
    goldcrest_session_free(rs);
    expect(goldcrest_lm_free(rwkv), GOLDCREST_STATUS_OK, "free RWKV-6");
    expect(goldcrest_lm_free(lm), GOLDCREST_STATUS_OK, "free decoder");
    free(m1.block); free(m2.block); free(m3.block); free(m4.block);
    free(saved); free(rwkv_saved); free(dec_bytes); free(rwkv_bytes); free(gf_bytes);
    if (failures) { fprintf(stderr, "%d failure(s)\n", failures); return 1; }
    printf("decoder through the C ABI: PASS\n");
    return 0;
}
