// One positional encoding of each kind, by name, with random tables where the kind has one: for
// tests that must hold for every encoding the layer supports.
#ifndef ATTNSERVE_TESTS_CORE_TEST_ENCODINGS_H_
#define ATTNSERVE_TESTS_CORE_TEST_ENCODINGS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/encodings/positional_encoding.h"
#include "tests/core/reference_attention.h"

namespace attnserve::testing {

// "none", "sinusoidal", "learned" (64 positions), "rope", "rope_dynamic_ntk" (factor 2 over 64
// original positions), "alibi", "t5" (unidirectional), "cope" (8 positions); none for others.
inline PositionalEncoding TestEncoding(const std::string& name, int64_t heads, int64_t head_dim,
                                       int64_t d) {
  if (name == "sinusoidal") return SinusoidalParams{};
  if (name == "learned") {
    return LearnedParams{std::make_shared<std::vector<float>>(RandomVector(64 * d, 71, 0.1f))};
  }
  if (name == "rope") return RopeParams{};
  if (name == "rope_dynamic_ntk") {
    RopeParams rope;
    rope.scaling.type = RopeScalingType::kDynamicNtk;
    rope.scaling.factor = 2.0;
    rope.scaling.original_max_positions = 64;
    return rope;
  }
  if (name == "alibi") return AlibiParams{};
  if (name == "t5") {
    T5BiasParams t5;
    t5.bidirectional = false;
    t5.table = std::make_shared<std::vector<float>>(RandomVector(32 * heads, 72));
    return t5;
  }
  if (name == "cope") {
    CopeParams cope;
    cope.npos_max = 8;
    cope.pos_emb = std::make_shared<std::vector<float>>(RandomVector(8 * head_dim, 73));
    return cope;
  }
  return NoPositionalEncoding{};
}

}  // namespace attnserve::testing

#endif  // ATTNSERVE_TESTS_CORE_TEST_ENCODINGS_H_
