/* Generate text with a goldcrest language model from C99.
 * usage: generate MODEL.safetensors [PROMPT] [N_TOKENS]
 * The model must carry a tokenizer (goldcrest convert ... --tokenizer PATH|world). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "goldcrest.h"

static int check(GoldcrestStatus s, const char *what) {
    if (s == GOLDCREST_STATUS_OK) return 0;
    fprintf(stderr, "%s: %s (%s)\n", what, goldcrest_status_str((int32_t)s), goldcrest_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "model.safetensors";
    const char *prompt = argc > 2 ? argv[2] : "A";
    int n = argc > 3 ? atoi(argv[3]) : 16;
    GoldcrestLm *lm = NULL;
    GoldcrestTokenizer *tok = NULL;
    GoldcrestDecodeStream *stream = NULL;
    GoldcrestSession *session = NULL;
    GoldcrestLmInfo info;
    GoldcrestMemoryPlan plan;
    GoldcrestSampler sampler;
    unsigned char *memory = NULL;
    uint32_t ids[256];
    size_t n_ids = 0, written = 0;
    char text[256];
    int rc = 1, i;

    if (goldcrest_version() != GOLDCREST_VERSION) {
        fprintf(stderr, "header %d does not match library %u\n", GOLDCREST_VERSION, goldcrest_version());
        return 1;
    }
    if (check(goldcrest_lm_open_file(path, &lm), "open model")) goto done;
    if (check(goldcrest_tokenizer_open_file(path, &tok), "open tokenizer")) goto done;
    if (check(goldcrest_lm_info(lm, &info), "info")) goto done;
    if (check(goldcrest_lm_memory_plan(lm, 64, 256, &plan), "memory plan")) goto done;
    printf("model: kind %d, vocabulary %zu, %zu layers, weights %zu B read in place, session %zu B\n",
           (int)info.kind, info.vocab_size, info.n_layer, plan.weight_bytes, plan.total_bytes);
    /* total_bytes is exact from a 64-byte boundary; malloc gives 16, so add the difference. */
    memory = malloc(plan.total_bytes + GOLDCREST_MEMORY_ALIGN - 1);
    if (!memory) goto done;
    if (check(goldcrest_session_create(lm, 64, 256, memory, plan.total_bytes + GOLDCREST_MEMORY_ALIGN - 1, &session),
              "session"))
        goto done;
    if (check(goldcrest_tokenizer_encode(tok, prompt, strlen(prompt), 0, ids, 256, &n_ids), "encode")) goto done;
    if (check(goldcrest_session_feed(session, ids, n_ids), "feed prompt")) goto done;
    if (check(goldcrest_sampler_default(&sampler), "sampler")) goto done;
    sampler.temperature = 0.8f;
    sampler.top_p = 0.9f;
    if (check(goldcrest_session_seed(session, 42), "seed")) goto done;
    if (check(goldcrest_decode_stream_create(tok, &stream), "stream")) goto done;
    printf("%s", prompt);
    for (i = 0; i < n; i++) {
        uint32_t next;
        if (check(goldcrest_session_sample(session, &sampler, &next), "sample")) goto done;
        if (check(goldcrest_decode_stream_push(stream, next, text, sizeof text, &written), "decode")) goto done;
        fwrite(text, 1, written, stdout);
        if (check(goldcrest_session_feed(session, &next, 1), "feed")) goto done;
    }
    if (check(goldcrest_decode_stream_finish(stream, text, sizeof text, &written), "finish")) goto done;
    fwrite(text, 1, written, stdout);
    printf("\n");
    rc = 0;
done:
    goldcrest_decode_stream_free(stream);
    goldcrest_session_free(session);
    free(memory);
    goldcrest_tokenizer_free(tok);
    goldcrest_lm_free(lm);
    return rc;
}
