// Dequantization bit-exactness: blocks written byte by byte from the GGUF layouts (dtype.h), every
// value checked exactly against the format's formula, plus hand-computed literal values.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/quant.h"

namespace herd {
namespace {

void put_f16(std::vector<uint8_t>& b, size_t off, uint16_t h) {
  b[off] = static_cast<uint8_t>(h & 0xFF);
  b[off + 1] = static_cast<uint8_t>(h >> 8);
}
// A byte pattern that hits every nibble value and both halves.
uint8_t pattern(int i, int salt) { return static_cast<uint8_t>((i * 37 + salt * 101 + 11) & 0xFF); }

std::vector<float> dequant(DType t, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t, bytes.data(), out.data(), n);
  return out;
}

constexpr uint16_t kD = 0x3555;     // 0.33325195...: a scale with a long mantissa
constexpr uint16_t kM = 0xC1A0;     // -2.8125
constexpr uint16_t kDmin = 0x2E66;  // 0.0999755859375

TEST(Dequantize, FloatTypes) {
  std::vector<uint8_t> b(8);
  put_f16(b, 0, 0x3C00);
  put_f16(b, 2, 0xC500);
  put_f16(b, 4, 0x0001);
  put_f16(b, 6, 0x7BFF);
  EXPECT_EQ(dequant(DType::F16, b, 4), (std::vector<float>{1.0f, -5.0f, 5.9604644775390625e-8f, 65504.0f}));
  put_f16(b, 0, 0x3F80);
  put_f16(b, 2, 0xC0A0);
  put_f16(b, 4, 0x3E20);
  put_f16(b, 6, 0x0000);
  EXPECT_EQ(dequant(DType::BF16, b, 4), (std::vector<float>{1.0f, -5.0f, 0.15625f, 0.0f}));
  const float f[3] = {1.5f, -0.0f, 3e38f};
  std::vector<uint8_t> fb(12);
  std::memcpy(fb.data(), f, 12);
  const auto out = dequant(DType::F32, fb, 3);
  EXPECT_EQ(std::memcmp(out.data(), f, 12), 0);
}

TEST(Dequantize, Q4_0) {
  std::vector<uint8_t> b(18 * 2);
  for (int blk = 0; blk < 2; ++blk) {
    put_f16(b, 18 * blk, blk ? kD : 0x4000);  // block 1: d = 2
    for (int j = 0; j < 16; ++j) b[18 * blk + 2 + j] = pattern(j, blk);
  }
  b[18 + 2] = 0x0F;  // second block, element 0 -> q 15, element 16 -> q 0
  const auto y = dequant(DType::Q4_0, b, 64);
  for (int blk = 0; blk < 2; ++blk) {
    const float d = f16_to_f32(blk ? kD : 0x4000);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = b[18 * blk + 2 + j];
      EXPECT_EQ(y[32 * blk + j], static_cast<float>((q & 0xF) - 8) * d);
      EXPECT_EQ(y[32 * blk + 16 + j], static_cast<float>((q >> 4) - 8) * d);
    }
  }
  EXPECT_EQ(y[32], 7.0f * f16_to_f32(kD));
  EXPECT_EQ(y[48], -8.0f * f16_to_f32(kD));
  // Block 0 has d = 2: element 0 is (pattern(0,0) & 15 - 8) * 2 = (11 - 8) * 2.
  EXPECT_EQ(y[0], 6.0f);
}

TEST(Dequantize, Q4_1) {
  std::vector<uint8_t> b(20);
  put_f16(b, 0, kD);
  put_f16(b, 2, kM);
  for (int j = 0; j < 16; ++j) b[4 + j] = pattern(j, 3);
  b[4] = 0xF0;
  const auto y = dequant(DType::Q4_1, b, 32);
  const float d = f16_to_f32(kD), m = f16_to_f32(kM);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], static_cast<float>(b[4 + j] & 0xF) * d + m);
    EXPECT_EQ(y[16 + j], static_cast<float>(b[4 + j] >> 4) * d + m);
  }
  EXPECT_EQ(y[0], -2.8125f);
  EXPECT_EQ(y[16], 15.0f * d - 2.8125f);
}

// Q5: the fifth bit of element j is bit j of the little-endian u32 at qh.
TEST(Dequantize, Q5_0AndQ5_1) {
  const uint8_t qh[4] = {0xA5, 0x0F, 0xF0, 0x5A};  // bits 0..31
  for (DType t : {DType::Q5_0, DType::Q5_1}) {
    const bool has_min = t == DType::Q5_1;
    const size_t qh_off = has_min ? 4 : 2, qs_off = qh_off + 4;
    std::vector<uint8_t> b(has_min ? 24 : 22);
    put_f16(b, 0, kD);
    if (has_min) put_f16(b, 2, kM);
    std::memcpy(&b[qh_off], qh, 4);
    for (int j = 0; j < 16; ++j) b[qs_off + j] = pattern(j, 5);
    const auto y = dequant(t, b, 32);
    const float d = f16_to_f32(kD), m = f16_to_f32(kM);
    for (int i = 0; i < 32; ++i) {
      const int bit5 = (qh[i / 8] >> (i % 8)) & 1;
      const int nib = i < 16 ? (b[qs_off + i] & 0xF) : (b[qs_off + i - 16] >> 4);
      const int q = nib | (bit5 << 4);
      const float want = has_min ? static_cast<float>(q) * d + m : static_cast<float>(q - 16) * d;
      EXPECT_EQ(y[i], want) << dtype_name(t) << " element " << i;
    }
  }
  // Literal: element 0 has qh bit 1 (0xA5 bit 0) and low nibble 11 -> q = 27 -> (27 - 16) * d.
  std::vector<uint8_t> b(22);
  put_f16(b, 0, 0x3C00);
  std::memcpy(&b[2], qh, 4);
  b[6] = 0x0B;
  EXPECT_EQ(dequant(DType::Q5_0, b, 32)[0], 11.0f);
  EXPECT_EQ(dequant(DType::Q5_0, b, 32)[16], -16.0f);  // high nibble 0, qh bit 16 (0xF0 bit 0) = 0
}

TEST(Dequantize, Q8_0) {
  std::vector<uint8_t> b(34);
  put_f16(b, 0, kD);
  for (int j = 0; j < 32; ++j) b[2 + j] = pattern(j, 7);
  b[2] = 0x80;  // -128
  b[3] = 0x7F;  // 127
  const auto y = dequant(DType::Q8_0, b, 32);
  const float d = f16_to_f32(kD);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], static_cast<float>(static_cast<int8_t>(b[2 + j])) * d);
  EXPECT_EQ(y[0], -128.0f * d);
  EXPECT_EQ(y[1], 127.0f * d);
}

// Twelve scale bytes and the (sc, m) pairs they encode, worked out by hand from the layout:
// j < 4: sc = s[j] & 63, m = s[j+4] & 63; j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4,
// m = (s[j+4] >> 4) | (s[j] >> 6) << 4.
constexpr uint8_t kScaleBytes[12] = {0xC1, 0x42, 0x03, 0xBF, 0x45, 0x86, 0x07, 0x3F, 0x9A, 0x5B, 0x2C, 0xFD};
constexpr int kSc[8] = {1, 2, 3, 63, 58, 27, 12, 45};
constexpr int kMin[8] = {5, 6, 7, 63, 25, 37, 2, 15};

// Element i of a Q4_K/Q5_K super-block: sub-block s = i / 32 lives in chunk s / 2 of qs, low
// nibbles for even s, high for odd; Q5_K's fifth bit is bit s of qh[i % 32].
void check_kquant_4_5(DType t) {
  const bool five = t == DType::Q5_K;
  const size_t qs_off = five ? 48 : 16;
  std::vector<uint8_t> b(five ? 176 : 144);
  put_f16(b, 0, kD);
  put_f16(b, 2, kDmin);
  std::memcpy(&b[4], kScaleBytes, 12);
  if (five)
    for (int l = 0; l < 32; ++l) b[16 + l] = pattern(l, 9);
  for (int i = 0; i < 128; ++i) b[qs_off + i] = pattern(i, 4);
  const auto y = dequant(t, b, 256);
  const float d = f16_to_f32(kD), dmin = f16_to_f32(kDmin);
  for (int i = 0; i < 256; ++i) {
    const int s = i / 32, l = i % 32;
    const uint8_t byte = b[qs_off + 32 * (s / 2) + l];
    int q = (s % 2 == 0) ? (byte & 0xF) : (byte >> 4);
    if (five) q |= ((b[16 + l] >> s) & 1) << 4;
    const float want = (d * static_cast<float>(kSc[s])) * static_cast<float>(q) - dmin * static_cast<float>(kMin[s]);
    ASSERT_EQ(y[i], want) << dtype_name(t) << " element " << i;
  }
}

TEST(Dequantize, Q4_K) { check_kquant_4_5(DType::Q4_K); }
TEST(Dequantize, Q5_K) { check_kquant_4_5(DType::Q5_K); }

TEST(Dequantize, Q4_KLiteralValues) {
  // d = 1, dmin = 1, all nibbles q: element of sub-block s = sc_s * q - m_s.
  std::vector<uint8_t> b(144);
  put_f16(b, 0, 0x3C00);
  put_f16(b, 2, 0x3C00);
  std::memcpy(&b[4], kScaleBytes, 12);
  b[16 + 32 * 2 + 5] = 0x3A;  // chunk 2, l = 5: sub-block 4 gets 10, sub-block 5 gets 3
  b[16 + 32 * 3 + 0] = 0xF1;  // chunk 3, l = 0: sub-block 6 gets 1, sub-block 7 gets 15
  const auto y = dequant(DType::Q4_K, b, 256);
  EXPECT_EQ(y[4 * 32 + 5], 58.0f * 10 - 25);
  EXPECT_EQ(y[5 * 32 + 5], 27.0f * 3 - 37);
  EXPECT_EQ(y[6 * 32 + 0], 12.0f * 1 - 2);
  EXPECT_EQ(y[7 * 32 + 0], 45.0f * 15 - 15);
  EXPECT_EQ(y[3 * 32 + 1], -63.0f);  // q = 0 in sub-block 3
}

// Q6_K element i: half h = i / 128, r = i % 128; low 4 bits in ql[64h + r % 64] (low nibble for
// r < 64, high otherwise), top 2 bits at bits 2 * (r / 32) of qh[32h + r % 32]; scale scales[i / 16].
TEST(Dequantize, Q6_K) {
  std::vector<uint8_t> b(210);
  for (int i = 0; i < 128; ++i) b[i] = pattern(i, 1);
  for (int i = 0; i < 64; ++i) b[128 + i] = pattern(i, 2);
  const int8_t sc[16] = {1, -1, 127, -128, 5, -7, 33, 64, -2, 3, 100, -100, 17, -17, 0, 9};
  for (int j = 0; j < 16; ++j) b[192 + j] = static_cast<uint8_t>(sc[j]);
  put_f16(b, 208, kD);
  const auto y = dequant(DType::Q6_K, b, 256);
  const float d = f16_to_f32(kD);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, r = i % 128;
    const uint8_t lo_byte = b[64 * h + r % 64];
    const int lo = r < 64 ? (lo_byte & 0xF) : (lo_byte >> 4);
    const int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
    const float want = (d * static_cast<float>(sc[i / 16])) * static_cast<float>((lo | (hi << 4)) - 32);
    ASSERT_EQ(y[i], want) << "element " << i;
  }
  // Literal: d = 1, ql[0] = 0x21, qh[0] = 0b11100100: elements 0, 32, 64, 96 of half 0.
  std::vector<uint8_t> c(210);
  c[0] = 0x21;
  c[32] = 0x00;
  c[128] = 0xE4;
  for (int j = 0; j < 16; ++j) c[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(-3));
  put_f16(c, 208, 0x3C00);
  const auto z = dequant(DType::Q6_K, c, 256);
  EXPECT_EQ(z[0], -3.0f * (1 - 32));             // low 1, high 0
  EXPECT_EQ(z[32], -3.0f * ((1 << 4) - 32));     // ql[32] low 0, high 1
  EXPECT_EQ(z[64], -3.0f * ((2 | 2 << 4) - 32));  // ql[0] high 2, high bits 2
  EXPECT_EQ(z[96], -3.0f * ((3 << 4) - 32));     // ql[32] high 0, high bits 3
  EXPECT_EQ(z[128], 96.0f);                      // half 1 all zero: q = -32
}

// Q2_K {scales[16]; qs[64]; f16 d; f16 dmin}: element i = 128n + 32j + l has its level at bits 2j of
// qs[32n + l] and belongs to sub-block i / 16, whose byte scales[i / 16] = sc | m << 4:
// x = (d · sc) · q − dmin · m.
TEST(Dequantize, Q2_K) {
  std::vector<uint8_t> b(84);
  for (int s = 0; s < 16; ++s) b[s] = pattern(s, 5);
  for (int i = 0; i < 64; ++i) b[16 + i] = pattern(i, 6);
  put_f16(b, 80, kD);
  put_f16(b, 82, kDmin);
  const auto y = dequant(DType::Q2_K, b, 256);
  const float d = f16_to_f32(kD), dmin = f16_to_f32(kDmin);
  for (int i = 0; i < 256; ++i) {
    const int n = i / 128, j = (i % 128) / 32, l = i % 32;
    const int q = (b[16 + 32 * n + l] >> (2 * j)) & 3;
    const int sc = b[i / 16] & 0xF, m = b[i / 16] >> 4;
    const float want = (d * static_cast<float>(sc)) * static_cast<float>(q) - dmin * static_cast<float>(m);
    ASSERT_EQ(y[i], want) << "element " << i;
  }
  // Literal: d = 1, dmin = 0.5; qs[5] = 0b11100100 gives elements 5, 37, 69, 101 levels 0, 1, 2, 3;
  // qs[32 + 20] = 0x03: element 128 + 20 level 3 (sub-block 9), the rest of that byte's values 0.
  std::vector<uint8_t> c(84);
  c[0] = 0x37;   // sub-block 0 (elements 0..15): sc 7, m 3
  c[2] = 0x0F;   // sub-block 2 (32..47): sc 15, m 0
  c[4] = 0xF1;   // sub-block 4 (64..79): sc 1, m 15
  c[6] = 0x22;   // sub-block 6 (96..111): sc 2, m 2
  c[9] = 0x45;   // sub-block 9 (144..159): sc 5, m 4
  c[16 + 5] = 0xE4;
  c[16 + 32 + 20] = 0x03;
  put_f16(c, 80, 0x3C00);
  put_f16(c, 82, 0x3800);
  const auto z = dequant(DType::Q2_K, c, 256);
  EXPECT_EQ(z[5], 7.0f * 0 - 1.5f);
  EXPECT_EQ(z[37], 15.0f * 1 - 0.0f);
  EXPECT_EQ(z[69], 1.0f * 2 - 7.5f);
  EXPECT_EQ(z[101], 2.0f * 3 - 1.0f);
  EXPECT_EQ(z[148], 5.0f * 3 - 2.0f);
  EXPECT_EQ(z[180], 0.0f);  // bits 2..3 of the same byte (sub-block 11: sc = m = 0)
}

// Q3_K {hmask[32]; qs[64]; scales[12]; f16 d}: the 2 low bits as Q2_K, the third bit of element
// i = 128n + 32j + l at bit 4n + j of hmask[l]; 16 6-bit scales sc (stored + 32):
// x = (d · (sc − 32)) · (q − 4 · (1 − hbit)). The test packs its scales the way ggml's
// dequantizer reads them: 3 little-endian words a0 a1 a2 unpacked to 4 words of 4 bytes
//   w0 = (a0 & 0x0f0f0f0f) | ((a2 & 0x03030303) << 4)        scales 0..3
//   w1 = (a1 & 0x0f0f0f0f) | (((a2 >> 2) & 0x03030303) << 4) scales 4..7
//   w2 = ((a0 >> 4) & 0x0f0f0f0f) | (((a2 >> 4) & 0x03030303) << 4)  scales 8..11
//   w3 = ((a1 >> 4) & 0x0f0f0f0f) | (((a2 >> 6) & 0x03030303) << 4)  scales 12..15
TEST(Dequantize, Q3_K) {
  const int codes[16] = {0, 63, 32, 31, 1, 62, 17, 45, 33, 5, 60, 40, 2, 50, 29, 34};  // sc = code − 32
  uint32_t a[3] = {0, 0, 0};
  for (int s = 0; s < 16; ++s) {
    const int word = s % 8 < 4 ? 0 : 1, byte = s % 4, nib = s < 8 ? 0 : 4;
    a[word] |= static_cast<uint32_t>(codes[s] & 0xF) << (8 * byte + nib);
    a[2] |= static_cast<uint32_t>(codes[s] >> 4) << (8 * byte + 2 * (s / 4));
  }
  uint32_t w[4] = {(a[0] & 0x0f0f0f0fu) | ((a[2] & 0x03030303u) << 4),
                   (a[1] & 0x0f0f0f0fu) | (((a[2] >> 2) & 0x03030303u) << 4),
                   ((a[0] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 4) & 0x03030303u) << 4),
                   ((a[1] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 6) & 0x03030303u) << 4)};
  for (int s = 0; s < 16; ++s) ASSERT_EQ(static_cast<int>((w[s / 4] >> (8 * (s % 4))) & 0xFF), codes[s]) << s;
  std::vector<uint8_t> b(110);
  for (int i = 0; i < 32; ++i) b[i] = pattern(i, 7);
  for (int i = 0; i < 64; ++i) b[32 + i] = pattern(i, 8);
  for (int k = 0; k < 12; ++k) b[96 + k] = static_cast<uint8_t>(a[k / 4] >> (8 * (k % 4)));
  put_f16(b, 108, kD);
  const auto y = dequant(DType::Q3_K, b, 256);
  const float d = f16_to_f32(kD);
  for (int i = 0; i < 256; ++i) {
    const int n = i / 128, j = (i % 128) / 32, l = i % 32;
    const int q = (b[32 + 32 * n + l] >> (2 * j)) & 3;
    const int hbit = (b[l] >> (4 * n + j)) & 1;
    const float want = (d * static_cast<float>(codes[i / 16] - 32)) * static_cast<float>(q - (hbit ? 0 : 4));
    ASSERT_EQ(y[i], want) << "element " << i;
  }
  // Literal: d = 0.5, every scale code 34 (sc = 2): step 1. qs[0] = 0b11100100, hmask[0] = 0b00000101:
  // element 0 (hbit bit 0 set) = 0, 32 (bit 1 clear) = 1 − 4, 64 (bit 2 set) = 2, 96 (clear) = 3 − 4;
  // element 128 (bit 4 clear, q 0) = −4; element 1 (nothing set) = −4.
  std::vector<uint8_t> c(110);
  c[32] = 0xE4;
  c[0] = 0x05;
  for (int k = 0; k < 8; ++k) c[96 + k] = 0x22;  // low nibbles 2 for all 16 scales
  for (int k = 8; k < 12; ++k) c[96 + k] = 0xAA;  // high bits 2 for all 16 (2 << 4 | 2 = 34)
  put_f16(c, 108, 0x3800);
  const auto z = dequant(DType::Q3_K, c, 256);
  EXPECT_EQ(z[0], 0.0f);
  EXPECT_EQ(z[32], -3.0f);
  EXPECT_EQ(z[64], 2.0f);
  EXPECT_EQ(z[96], -1.0f);
  EXPECT_EQ(z[128], -4.0f);
  EXPECT_EQ(z[1], -4.0f);
}

TEST(Dequantize, RejectsPartialBlocks) {
  std::vector<uint8_t> b(1024);
  std::vector<float> y(256);
  EXPECT_THROW(dequantize_row(DType::Q4_0, b.data(), y.data(), 33), std::invalid_argument);
  EXPECT_THROW(dequantize_row(DType::Q6_K, b.data(), y.data(), 128), std::invalid_argument);
  EXPECT_THROW(dequantize_row(DType::Q2_K, b.data(), y.data(), 128), std::invalid_argument);
  EXPECT_THROW(dequantize_row(DType::Q3_K, b.data(), y.data(), 32), std::invalid_argument);
  EXPECT_THROW(dequantize_row(static_cast<DType>(99), b.data(), y.data(), 32), std::invalid_argument);
  EXPECT_THROW(quantize_row(DType::Q8_0, y.data(), b.data(), 31), std::invalid_argument);
  EXPECT_NO_THROW(dequantize_row(DType::Q4_K, b.data(), y.data(), 0));
}

}  // namespace
}  // namespace herd
