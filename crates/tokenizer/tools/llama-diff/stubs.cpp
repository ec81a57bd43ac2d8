// Stand-ins for what llama-vocab.cpp needs from the rest of llama.cpp: the gguf accessors over
// an in-memory key/value list, the model loader's typed getters, logging and string helpers.
#include "llama-model-loader.h"
#include "llama-arch.h"
#include "gguf.h"
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <string>
struct KV { std::string key; int type; int arr_type = -1; std::vector<std::string> strs; std::vector<uint8_t> raw; size_t n = 0; std::string s; uint8_t scalar[8]; };
struct gguf_context { std::vector<KV> kvs; };

int64_t gguf_find_key(const gguf_context * c, const char * key) { for (size_t i = 0; i < c->kvs.size(); i++) if (c->kvs[i].key == key) return i; return -1; }
enum gguf_type gguf_get_kv_type(const gguf_context * c, int64_t i) { return (gguf_type) c->kvs[i].type; }
enum gguf_type gguf_get_arr_type(const gguf_context * c, int64_t i) { return (gguf_type) c->kvs[i].arr_type; }
size_t gguf_get_arr_n(const gguf_context * c, int64_t i) { return c->kvs[i].n; }
const void * gguf_get_arr_data(const gguf_context * c, int64_t i) { return c->kvs[i].raw.data(); }
const char * gguf_get_arr_str(const gguf_context * c, int64_t i, size_t j) { return c->kvs[i].strs[j].c_str(); }
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt); abort(); }

gguf_context * G;
static const KV * find(enum llm_kv kid) { LLM_KV kv(LLM_ARCH_LLAMA); int64_t i = gguf_find_key(G, kv(kid).c_str()); return i < 0 ? nullptr : &G->kvs[i]; }
template<> bool llama_model_loader::get_key<std::string>(enum llm_kv kid, std::string & r, bool req) { auto k = find(kid); if (!k) { if (req) abort(); return false; } if (k->type != GGUF_TYPE_STRING) abort(); r = k->s; return true; }
template<> bool llama_model_loader::get_key<bool>(enum llm_kv kid, bool & r, bool req) { auto k = find(kid); if (!k) { if (req) abort(); return false; } if (k->type != GGUF_TYPE_BOOL) abort(); r = k->scalar[0]; return true; }
template<> bool llama_model_loader::get_key<uint32_t>(enum llm_kv kid, uint32_t & r, bool req) { auto k = find(kid); if (!k) { if (req) abort(); return false; } if (k->type != GGUF_TYPE_UINT32) abort(); memcpy(&r, k->scalar, 4); return true; }

#include <cstdarg>
#include "llama-impl.h"
void llama_log_internal(ggml_log_level level, const char * fmt, ...) { (void)level; (void)fmt; }
std::string format(const char * fmt, ...) {
    va_list ap; va_start(ap, fmt); char buf[4096]; vsnprintf(buf, sizeof buf, fmt, ap); va_end(ap); return buf;
}
void replace_all(std::string & s, const std::string & search, const std::string & replace) {
    if (search.empty()) return;
    std::string builder; builder.reserve(s.length()); size_t pos = 0, last_pos = 0;
    while ((pos = s.find(search, last_pos)) != std::string::npos) { builder.append(s, last_pos, pos - last_pos); builder.append(replace); last_pos = pos + search.length(); }
    builder.append(s, last_pos, std::string::npos); s = std::move(builder);
}
