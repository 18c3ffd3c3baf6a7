/* See work.h. */
#include "work.h"

#define TRY(call, name)                                  \
    do {                                                 \
        GoldcrestStatus status_ = (call);                \
        if (status_ != GOLDCREST_STATUS_OK) {            \
            result.status = status_;                     \
            result.step = (name);                        \
            return result;                               \
        }                                                \
    } while (0)

unsigned char *region_take(Region *r, size_t n) {
    size_t misaligned = (uintptr_t)(r->base + r->used) % GOLDCREST_MEMORY_ALIGN;
    size_t start = r->used + (misaligned ? GOLDCREST_MEMORY_ALIGN - misaligned : 0);
    if (start > r->cap || n > r->cap - start) return NULL;
    r->used = start + n;
    return r->base + start;
}

static WorkResult ok(void) {
    WorkResult r;
    r.status = GOLDCREST_STATUS_OK;
    r.step = "";
    return r;
}

static WorkResult out_of_memory(const char *step) {
    WorkResult r;
    r.status = GOLDCREST_STATUS_BUFFER_TOO_SMALL;
    r.step = step;
    return r;
}

WorkResult work_forecast(const uint8_t *model, size_t len, Region *memory, ForecastResult *out) {
    static double values[CASE_CONTEXT];
    static uint8_t present[CASE_CONTEXT];
    WorkResult result = ok();
    GoldcrestForecaster *fc = 0;
    GoldcrestForecastRequest req = {0};
    GoldcrestForecastOutput dst;
    GoldcrestMemoryPlan plan;
    unsigned char *handle, *arena;
    size_t t;

    for (t = 0; t < CASE_CONTEXT; t++) {
        values[t] = case_value(t);
        present[t] = t != CASE_MISSING_STEP; /* one reading lost */
    }

    if (!(handle = region_take(memory, GOLDCREST_FORECASTER_SIZE))) return out_of_memory("forecaster handle");
    TRY(goldcrest_forecaster_open_in(model, len, handle, GOLDCREST_FORECASTER_SIZE, &fc), "goldcrest_forecaster_open_in");

    req.struct_size = sizeof req;
    req.values = values;
    req.mask = present;
    req.variates = 1;
    req.context = CASE_CONTEXT;
    req.horizon = CASE_HORIZON;
    TRY(goldcrest_forecaster_memory_plan(fc, &req, &plan), "goldcrest_forecaster_memory_plan");
    out->plan_bytes = plan.total_bytes;
    if (!(arena = region_take(memory, plan.total_bytes))) return out_of_memory("forecast memory");
    dst.mean = out->mean;
    dst.quantiles = 0;
    dst.samples = 0;
    TRY(goldcrest_forecast(fc, &req, arena, plan.total_bytes, &dst), "goldcrest_forecast");
    TRY(goldcrest_forecaster_free(fc), "goldcrest_forecaster_free");
    return result;
}

WorkResult work_generate(const uint8_t *model, size_t len, size_t context, Region *memory, GenerateResult *out) {
    WorkResult result = ok();
    GoldcrestLm *lm = 0;
    GoldcrestSession *session = 0;
    GoldcrestLmInfo info;
    GoldcrestMemoryPlan plan;
    GoldcrestSampler greedy;
    unsigned char *model_memory, *session_memory, *saved = 0;
    size_t written = 0, i, half = CASE_STEPS / 2;
    uint32_t token;

    TRY(goldcrest_lm_open_size(model, len, &out->model_bytes), "goldcrest_lm_open_size");
    if (!(model_memory = region_take(memory, out->model_bytes))) return out_of_memory("model handle");
    TRY(goldcrest_lm_open_in(model, len, model_memory, out->model_bytes, &lm), "goldcrest_lm_open_in");
    TRY(goldcrest_lm_info(lm, &info), "goldcrest_lm_info");
    if (info.vocab_size > WORK_MAX_VOCAB) return out_of_memory("vocabulary larger than WORK_MAX_VOCAB");
    out->vocab = info.vocab_size;

    TRY(goldcrest_lm_memory_plan(lm, CASE_PROMPT_LEN, context, &plan), "goldcrest_lm_memory_plan");
    out->session_bytes = plan.total_bytes;
    if (!(session_memory = region_take(memory, plan.total_bytes))) return out_of_memory("session memory");
    TRY(goldcrest_session_create(lm, CASE_PROMPT_LEN, context, session_memory, plan.total_bytes, &session),
        "goldcrest_session_create");
    TRY(goldcrest_sampler_default(&greedy), "goldcrest_sampler_default");
    greedy.temperature = 0.0f;

    TRY(goldcrest_session_feed(session, case_prompt, CASE_PROMPT_LEN), "goldcrest_session_feed(prompt)");
    for (i = 0; i < CASE_STEPS; i++) {
        TRY(goldcrest_session_sample(session, &greedy, &token), "goldcrest_session_sample");
        out->tokens[i] = token;
        if (i == half - 1) { /* the state before this token goes in: a checkpoint */
            /* A decoder's saved size grows with its positions: ask now, not at the start. */
            TRY(goldcrest_session_state_size(session, &out->state_bytes), "goldcrest_session_state_size");
            if (!(saved = region_take(memory, out->state_bytes))) return out_of_memory("saved state");
            TRY(goldcrest_session_save_state(session, saved, out->state_bytes, &written),
                "goldcrest_session_save_state");
        }
        TRY(goldcrest_session_feed(session, &token, 1), "goldcrest_session_feed");
    }
    TRY(goldcrest_session_logits(session, out->last_logits, out->vocab), "goldcrest_session_logits");

    /* The checkpoint holds the prompt and the first `half - 1` picked tokens; restoring it and
     * feeding token `half - 1` again must reproduce the second half exactly. */
    TRY(goldcrest_session_restore_state(session, saved, written), "goldcrest_session_restore_state");
    out->resumed_equal = 1;
    token = out->tokens[half - 1];
    for (i = half; i < CASE_STEPS; i++) {
        TRY(goldcrest_session_feed(session, &token, 1), "goldcrest_session_feed(resumed)");
        TRY(goldcrest_session_sample(session, &greedy, &token), "goldcrest_session_sample(resumed)");
        if (token != out->tokens[i]) out->resumed_equal = 0;
    }
    TRY(goldcrest_session_free(session), "goldcrest_session_free");
    TRY(goldcrest_lm_free(lm), "goldcrest_lm_free");
    return result;
}
