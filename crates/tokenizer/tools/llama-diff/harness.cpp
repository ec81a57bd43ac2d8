// Differential-test harness: llama.cpp's own vocabulary code (llama-vocab.cpp, unicode.cpp,
// compiled from its source) loads a vocabulary from metadata dumped by dump_gguf_kv.py and
// prints special ids, the EOG set, every token's piece, and tokenize/detokenize results for a
// list of texts, in the format of `examples/llama_diff_dump.rs`. See run.sh.
//
// It reaches into llama_vocab's private state, hence the `private public` trick; test-only.
#define private public
#include "llama-vocab.cpp"
#include "llama-model-loader.h"
#undef private
#include <fstream>
#include <cstdio>

struct KV { std::string key; int type; int arr_type = -1; std::vector<std::string> strs; std::vector<uint8_t> raw; size_t n = 0; std::string s; uint8_t scalar[8]; };
struct gguf_context { std::vector<KV> kvs; };
extern gguf_context * G;
static uint32_t r32(std::ifstream & f) { uint32_t x; f.read((char*)&x, 4); return x; }
static std::string rstr(std::ifstream & f) { uint32_t n = r32(f); std::string s(n, '\0'); f.read(&s[0], n); return s; }

static void hex(const std::string & s) { for (unsigned char c : s) printf("%02x", c); }

int main(int argc, char ** argv) {
    std::ifstream f(argv[1], std::ios::binary);
    G = new gguf_context();
    uint32_t nk = r32(f);
    for (uint32_t i = 0; i < nk; i++) {
        KV kv; kv.key = rstr(f); kv.type = r32(f);
        if (kv.type == GGUF_TYPE_ARRAY) {
            kv.arr_type = r32(f); uint64_t n; f.read((char*)&n, 8); kv.n = n;
            for (uint64_t j = 0; j < n; j++) {
                if (kv.arr_type == GGUF_TYPE_STRING) kv.strs.push_back(rstr(f));
                else if (kv.arr_type == GGUF_TYPE_BOOL) { uint8_t b; f.read((char*)&b, 1); kv.raw.push_back(b); }
                else { uint8_t b[4]; f.read((char*)b, 4); kv.raw.insert(kv.raw.end(), b, b + 4); }
            }
        } else if (kv.type == GGUF_TYPE_STRING) kv.s = rstr(f);
        else if (kv.type == GGUF_TYPE_BOOL) f.read((char*)kv.scalar, 1);
        else if (kv.type == GGUF_TYPE_UINT64) f.read((char*)kv.scalar, 8);
        else f.read((char*)kv.scalar, 4);
        G->kvs.push_back(std::move(kv));
    }
    alignas(llama_model_loader) static char buf[sizeof(llama_model_loader)];
    auto & ml = *reinterpret_cast<llama_model_loader*>(buf);
    ml.metadata = G;
    llama_vocab vocab;
    vocab.load(ml, LLM_KV(LLM_ARCH_LLAMA));
    auto & im = *vocab.pimpl;
    printf("bos %d eos %d eot %d eom %d unk %d pad %d add_bos %d add_eos %d\n", im.special_bos_id, im.special_eos_id, im.special_eot_id, im.special_eom_id, im.special_unk_id, im.special_pad_id, im.add_bos, im.add_eos);
    printf("eog"); for (auto id : im.special_eog_ids) printf(" %d", id); printf("\n");
    int n = vocab.n_tokens();
    for (int sp = 0; sp < 2; sp++) for (int id = 0; id < n; id++) {
        char pb[1024]; int k = vocab.token_to_piece(id, pb, sizeof pb, 0, sp);
        printf("P%d %d ", sp, id); hex(std::string(pb, k < 0 ? 0 : k)); printf("\n");
        if (im.is_control(id)) printf("C %d\n", id);
    }
    std::ifstream tf(argv[2], std::ios::binary);
    int ti = 0;
    while (true) {
        uint32_t len; if (!tf.read((char*)&len, 4)) break;
        std::string t(len, '\0'); tf.read(&t[0], len);
        const int modes[3][2] = {{1,1},{1,0},{0,0}};
        for (auto & m : modes) {
            auto ids = vocab.tokenize(t, m[0], m[1]);
            printf("T%d %d%d", ti, m[0], m[1]); for (auto id : ids) printf(" %d", id); printf("\n");
            if (m[1]) for (int sp = 0; sp < 2; sp++) { printf("D%d %d ", ti, sp); hex(vocab.detokenize(ids, sp)); printf("\n"); }
        }
        ti++;
    }
}
