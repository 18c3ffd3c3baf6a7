// C++17 with a small RAII wrapper over the goldcrest C ABI: handles close themselves, failed
// calls throw goldcrest::Error carrying the status and goldcrest_last_error().
// usage: generate MODEL.safetensors [PROMPT] [N_TOKENS]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#include "goldcrest.h"

namespace goldcrest {

struct Error : std::runtime_error {
    GoldcrestStatus status;
    Error(GoldcrestStatus s, const std::string &what)
        : std::runtime_error(what + ": " + goldcrest_status_str(static_cast<int32_t>(s)) + " (" +
                             goldcrest_last_error() + ")"),
          status(s) {}
};

inline void check(GoldcrestStatus s, const char *what) {
    if (s != GOLDCREST_STATUS_OK) throw Error(s, what);
}

struct LmFree { void operator()(GoldcrestLm *p) const { goldcrest_lm_free(p); } };
struct TokFree { void operator()(GoldcrestTokenizer *p) const { goldcrest_tokenizer_free(p); } };
struct SessionFree { void operator()(GoldcrestSession *p) const { goldcrest_session_free(p); } };
struct StreamFree { void operator()(GoldcrestDecodeStream *p) const { goldcrest_decode_stream_free(p); } };

class Model {
  public:
    explicit Model(const std::string &path) {
        GoldcrestLm *lm = nullptr;
        check(goldcrest_lm_open_file(path.c_str(), &lm), "open model");
        lm_.reset(lm);
        GoldcrestTokenizer *tok = nullptr;
        check(goldcrest_tokenizer_open_file(path.c_str(), &tok), "open tokenizer");
        tok_.reset(tok);
    }
    GoldcrestLm *get() const { return lm_.get(); }
    std::vector<uint32_t> encode(const std::string &text) const {
        std::vector<uint32_t> ids(text.size() + 8);
        size_t n = 0;
        check(goldcrest_tokenizer_encode(tok_.get(), text.data(), text.size(), 0, ids.data(), ids.size(), &n),
              "encode");
        ids.resize(n);
        return ids;
    }
    GoldcrestTokenizer *tokenizer() const { return tok_.get(); }

  private:
    std::unique_ptr<GoldcrestLm, LmFree> lm_;
    std::unique_ptr<GoldcrestTokenizer, TokFree> tok_;
};

// A session owns its memory; declared after the model it uses, so it is destroyed first.
class Session {
  public:
    Session(const Model &model, size_t max_tokens, size_t context) {
        GoldcrestMemoryPlan plan{};
        check(goldcrest_lm_memory_plan(model.get(), max_tokens, context, &plan), "memory plan");
        memory_.resize(plan.total_bytes + GOLDCREST_MEMORY_ALIGN - 1);  // exact from a 64-byte boundary
        GoldcrestSession *s = nullptr;
        check(goldcrest_session_create(model.get(), max_tokens, context, memory_.data(), memory_.size(), &s),
              "session");
        session_.reset(s);
    }
    void feed(const std::vector<uint32_t> &ids) {
        check(goldcrest_session_feed(session_.get(), ids.data(), ids.size()), "feed");
    }
    uint32_t sample(const GoldcrestSampler &params) {
        uint32_t next = 0;
        check(goldcrest_session_sample(session_.get(), &params, &next), "sample");
        return next;
    }

  private:
    std::vector<unsigned char> memory_;
    std::unique_ptr<GoldcrestSession, SessionFree> session_;  // freed before memory_
};

}  // namespace goldcrest

int main(int argc, char **argv) try {
    const std::string path = argc > 1 ? argv[1] : "model.safetensors";
    const std::string prompt = argc > 2 ? argv[2] : "A";
    const int n = argc > 3 ? std::atoi(argv[3]) : 16;
    goldcrest::Model model(path);
    goldcrest::Session session(model, 64, 256);
    session.feed(model.encode(prompt));
    GoldcrestSampler params{};
    goldcrest::check(goldcrest_sampler_default(&params), "sampler");
    params.temperature = 0;  // greedy
    GoldcrestDecodeStream *raw = nullptr;
    goldcrest::check(goldcrest_decode_stream_create(model.tokenizer(), &raw), "stream");
    std::unique_ptr<GoldcrestDecodeStream, goldcrest::StreamFree> stream(raw);
    std::string text = prompt;
    char buf[256];
    size_t written = 0;
    for (int i = 0; i < n; i++) {
        uint32_t next = session.sample(params);
        goldcrest::check(goldcrest_decode_stream_push(stream.get(), next, buf, sizeof buf, &written), "decode");
        text.append(buf, written);
        session.feed({next});
    }
    goldcrest::check(goldcrest_decode_stream_finish(stream.get(), buf, sizeof buf, &written), "finish");
    text.append(buf, written);
    std::printf("%zu bytes: ", text.size());
    for (unsigned char c : text) std::printf(c >= 32 && c < 127 ? "%c" : "\\x%02x", c);
    std::printf("\n");
    // Error paths through the wrapper: a missing file throws with the OS's reason.
    try {
        goldcrest::Model missing("/nonexistent.safetensors");
        return 1;
    } catch (const goldcrest::Error &e) {
        if (e.status != GOLDCREST_STATUS_IO) return 1;
        std::printf("expected failure: %s\n", e.what());
    }
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
}
