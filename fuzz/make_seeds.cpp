// Writes the seed corpus of every harness (fuzz/corpus/<name>/), small files built with herd's own
// writers: GgufWriter for GGUF, pack()/encode_frames() for the protocol and the lane, real chat
// templates and tokenizer texts. Run by fuzz/gen-corpus.sh; its output is committed.
//   make_seeds OUT_DIR [SMOLLM2.gguf]
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cluster/protocol.h"
#include "cluster/wire.h"
#include "engine/nccl_bootstrap.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "transport/codec.h"
#include "transport/tcp_lane.h"
#include "fuzz/fuzz_util.h"

using namespace herd;
using namespace herd::cluster;
namespace fs = std::filesystem;

namespace {

fs::path g_out;

void write(const std::string& harness, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / harness;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string str(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }
std::string u16(size_t n) { return std::string{static_cast<char>(n & 0xff), static_cast<char>(n >> 8)}; }

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 37);
  return b;
}

// A tiny llama-shaped file: hyper-parameters, a 6-token SentencePiece or GPT-2 vocab, a chat
// template and one tensor of each common type.
std::string tiny_gguf(uint32_t alignment, uint32_t version, bool bpe) {
  model::GgufWriter w;
  w.set_version(version);
  if (alignment) w.set_alignment(alignment);
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.context_length", 64);
  w.set_u32("llama.embedding_length", 8);
  w.set_u32("llama.feed_forward_length", 16);
  w.set_u32("llama.attention.head_count", 2);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_string("tokenizer.ggml.model", bpe ? "gpt2" : "llama");
  if (bpe) {
    w.set_string_array("tokenizer.ggml.tokens", {"<|endoftext|>", "a", "b", "ab", "\xc4\xa0", "\xc4\xa0" "a"});
    w.set_string_array("tokenizer.ggml.merges", {"a b", "\xc4\xa0 a"});
    w.set_string("tokenizer.ggml.pre", "smollm");
  } else {
    w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b", "<0x41>"});
    w.set_array<float>("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3});
    w.set_array<int32_t>("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 6});
  }
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", bpe ? 0 : 2);
  w.set_string("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{m['role']}}\n{{m['content']}}<|im_end|>\n{% endfor %}");
  w.add_tensor("h", {1}, DType::F16, bytes_of(2, 1));
  w.add_tensor("token_embd.weight", {8, 6}, DType::F32, bytes_of(8 * 6 * 4, 2));
  w.add_tensor("output_norm.weight", {8}, DType::F16, bytes_of(16, 3));
  w.add_tensor("q", {32}, DType::Q8_0, bytes_of(34, 4));
  return str(w.to_bytes());
}

void gguf_seeds() {
  write("fuzz_gguf", "spm", tiny_gguf(0, 3, false));
  write("fuzz_gguf", "bpe", tiny_gguf(0, 3, true));
  write("fuzz_gguf", "align1", tiny_gguf(1, 3, false));
  write("fuzz_gguf", "v2_align8", tiny_gguf(8, 2, true));
  model::GgufWriter empty;
  write("fuzz_gguf", "empty", str(empty.to_bytes()));
}

std::vector<Message> messages() {
  std::vector<Message> out;
  Hello h;
  h.name = "stage 1";
  out.push_back(pack(h));
  Assign a;
  a.model_hash = std::string(64, 'a');
  a.model_path = "/models/x.gguf";
  a.layers = {0, 2, true, false};
  a.n_ctx = 64;
  a.next_address = "tcp://127.0.0.1:7102";
  a.tensor_digests = {{"token_embd.weight", {}}, {"blk.0.attn_q.weight", {}}};  // protocol 9
  a.tensor_digests[1].blake2b.fill(0xab);
  out.push_back(pack(a));
  Assign t = a;  // protocol 10: a tensor-parallel rank 0 of 2 whose next stage is a group of 2
  t.tp.size = 2;
  t.tp.weights = {1e10, 2e10};
  t.tp.sync = 2;
  t.tp.next_addresses = {"tcp://127.0.0.1:7102", "tcp://127.0.0.1:7103"};
  t.tp.ring_timeout_ms = 5000;
  out.push_back(pack(t));
  out.push_back(pack(Ready{}));
  Ready rr{"assigned"};
  rr.ring_address = "tcp://0.0.0.0:40001";
  out.push_back(pack(rr));
  TpRing ring;
  ring.session = 3;
  ring.addresses = {"tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002"};
  out.push_back(pack(ring));
  ErrorMsg e;
  e.message = "boom";
  out.push_back(pack(e));
  Forward f;
  out.push_back(pack(f, {Tensor{WireDType::I32, {3}, std::string(12, '\1')}}));
  out.push_back(pack(Result{}, {Tensor{WireDType::F32, {2, 2}, std::string(16, '\0')}}));
  WeightRequest wr;
  wr.offset = 4096;
  wr.length = 4;
  out.push_back(pack(wr));
  out.push_back(pack(WeightChunk{}, {Tensor{WireDType::U8, {4}, "abcd"}}));
  Ping p;
  p.seq = 7;
  p.bytes = 4;
  out.push_back(pack(p, {Tensor{WireDType::U8, {4}, "ping"}}));
  out.push_back(pack(Pong{}));
  out.push_back(pack(Reset{}));
  out.push_back(pack(Stop{}));
  NcclIdMessage hop;  // protocol 11: a stage hop between devices
  hop.group_tag = nccl_group_tag("seed hop");
  hop.nranks = 2;
  hop.id.fill(0x5a);
  out.push_back(pack(HopOffer{encode_nccl_id(hop), 0x1234, false}));
  out.push_back(pack(HopAnswer{HopState::Failed, "no GPU"}));
  Forward on_hop;
  on_hop.device_hop = true;
  on_hop.pos = {4};
  on_hop.seq = {0};
  on_hop.logits = {1};
  out.push_back(pack(on_hop));
  return out;
}

void protocol_and_lane_seeds() {
  int i = 0;
  std::map<std::string, int> seen;  // a second message of a type (e.g. a tensor-parallel Assign): NAME_2
  for (const Message& m : messages()) {
    const std::string type = msg_type_name(m.type);
    const int nth = ++seen[type];
    const std::string name = nth == 1 ? type : type + "_" + std::to_string(nth);
    write("fuzz_protocol", name + "_payload", std::string(1, '\0') + u16(m.type) + m.payload);
    std::string framed(1, '\1');
    std::string lane = std::string{static_cast<char>(i * 7), static_cast<char>(i)};  // chunk, first-bound selectors
    const auto frames = transport::encode_frames(m);
    uint32_t hdr[2] = {transport::kLaneMagic, static_cast<uint32_t>(frames.size())};
    lane.append(reinterpret_cast<const char*>(hdr), 8);
    for (const auto& fr : frames) {
      framed += u16(fr.size()) + fr;
      const uint64_t n = fr.size();
      lane.append(reinterpret_cast<const char*>(&n), 8);
      lane += fr;
    }
    write("fuzz_protocol", name + "_frames", framed);
    write("fuzz_lane", name, lane);
    ++i;
  }
  // Sealed lanes (fuzz_lane's mode bit 0x80): every message as authentic records, in one stream.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw std::runtime_error("socketpair");
  transport::LaneSocket sender(sv[0], uint64_t{1} << 20);
  uint8_t out[transport::kLaneKeyBytes], in[transport::kLaneKeyBytes];
  std::memcpy(out, fuzz::kLaneKeyIn, sizeof out);  // the harness receives with kLaneKeyIn
  std::memcpy(in, fuzz::kLaneKeyOut, sizeof in);
  sender.seal(out, in, "seed");
  std::string sealed{static_cast<char>(3), static_cast<char>(0x80)};
  for (const Message& m : messages()) {
    if (!sender.send(transport::encode_frames(m), 1000).empty()) throw std::runtime_error("sealed seed");
    char buf[65536];
    const ssize_t n = ::recv(sv[1], buf, sizeof buf, 0);
    if (n > 0) sealed.append(buf, static_cast<size_t>(n));
  }
  ::close(sv[1]);
  write("fuzz_lane", "sealed_all", sealed);
}

void chat_seeds(const std::string& smollm) {
  std::vector<std::pair<std::string, std::string>> tmpls = {
      {"chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
      {"llama3", "{% set loop_messages = messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                 " + message['content'] | trim + '<|eot_id|>' }}"},
      {"llama2", "{{ bos_token + '[INST] ' + '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' }}{{ ' [/INST]' }}"},
      {"mistral", "{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{{ eos_token }}"},
      {"zephyr", "{% for message in messages %}{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}"},
      {"gemma", "{{ bos_token }}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"},
  };
  try {
    auto f = model::GgufFile::open(smollm, {.map_all = false});
    if (auto t = f->get_string("tokenizer.chat_template")) tmpls.push_back({"smollm2", *t});
  } catch (const std::exception&) {
  }
  for (const auto& [name, t] : tmpls) {
    std::string s(1, '\3');  // flags: generation prompt, BOS
    s += u16(t.size()) + t;
    s += std::string(1, static_cast<char>(name.size())) + name;
    for (auto [role, content] : {std::pair<int, std::string>{0, "Be brief."}, {1, "Hi there"}, {2, " Hello! "}, {1, "Why?"}}) {
      s += static_cast<char>(role);
      s += static_cast<char>(content.size());
      s += content;
    }
    write("fuzz_chat_template", name, s);
  }
}

void tokenizer_seeds() {
  const std::vector<std::string> texts = {
      "Hello world", " leading space and  double", "Once upon a time, there was a little girl named Lily.",
      "<s>[INST] special <|im_start|>user\n</s>", "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80",
      "123456789 3.14 1e10", "\t\n\r\n   \n", "don't we'll I'M", "\xff\xfe invalid utf8 \xc3", "a"};
  int i = 0;
  for (const auto& t : texts) {
    for (uint8_t flags : {uint8_t(0), uint8_t(7)}) {  // SPM plain; BPE with add_special + parse_special
      write("fuzz_tokenizer", "t" + std::to_string(i) + "_" + std::to_string(flags), std::string(1, static_cast<char>(flags)) + t);
    }
    ++i;
  }
}

}  // namespace

// fuzz_nccl_id: u16 nranks-1 | u64 tag | message. A valid message for 2 and for 8 ranks, and one
// packed as floats (what exchange_nccl_id broadcasts).
void nccl_id_seeds() {
  for (int nranks : {2, 8}) {
    NcclIdMessage m;
    m.group_tag = nccl_group_tag("seed");
    m.nranks = nranks;
    for (size_t i = 0; i < m.id.size(); ++i) m.id[i] = static_cast<uint8_t>(i * 7 + 1);
    std::string tag(8, '\0');
    std::memcpy(tag.data(), &m.group_tag, 8);
    const std::string msg = encode_nccl_id(m);
    write("fuzz_nccl_id", "valid_" + std::to_string(nranks), u16(static_cast<size_t>(nranks - 1)) + tag + msg);
    if (nranks == 2) {
      const std::vector<float> f = pack_bytes_f32(msg);
      write("fuzz_nccl_id", "packed_f32", u16(1) + tag + std::string(reinterpret_cast<const char*>(f.data()), f.size() * 4));
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR [SMOLLM2.gguf]\n");
    return 2;
  }
  g_out = argv[1];
  gguf_seeds();
  protocol_and_lane_seeds();
  chat_seeds(argc > 2 ? argv[2] : "");
  tokenizer_seeds();
  nccl_id_seeds();
  return 0;
}
