// Exponential backoff with full jitter (AWS architecture blog):
// delay = uniform random in [0, min(cap, base * 2^n)] for the n-th call since Reset().
// Not thread-safe; one per retry loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace torwart::net {

class Backoff {
 public:
  // seed 0 seeds from std::random_device; any other seed gives a reproducible sequence (tests).
  Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap, uint64_t seed = 0);
  // The next delay to wait; grows per call until Reset().
  std::chrono::milliseconds Next();
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  std::chrono::milliseconds base_, cap_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace torwart::net
