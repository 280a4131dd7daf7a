#include "torwart/net/backoff.hpp"

#include <algorithm>
#include <climits>

namespace torwart::net {
namespace {
uint64_t SeedOrRandom(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}
}  // namespace

Backoff::Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap, uint64_t seed)
    : base_(std::max(base, std::chrono::milliseconds(1))),
      cap_(std::max(cap, base_)),
      rng_(SeedOrRandom(seed)) {}

std::chrono::milliseconds Backoff::Next() {
  // ceiling = min(cap, base * 2^attempt), computed without overflowing.
  int64_t ceiling = base_.count();
  for (int i = 0; i < attempt_ && ceiling < cap_.count(); ++i) ceiling *= 2;
  ceiling = std::min(ceiling, static_cast<int64_t>(cap_.count()));
  if (attempt_ < INT_MAX) ++attempt_;
  std::uniform_int_distribution<int64_t> dist(0, ceiling);
  return std::chrono::milliseconds(dist(rng_));
}

}  // namespace torwart::net
