// Timing helpers. Times are millis() values (uint32_t, wrapping every ~49.7 days); every comparison is
// on elapsed time (now - then), which stays right across the wrap.
#pragma once

#include <cstdint>

namespace tokenflow {

inline uint32_t elapsed(uint32_t now, uint32_t then) { return now - then; }

// Particle allows about one publish per second with bursts of up to four. A token bucket holding
// `burst` tokens, refilled by one every `refillMs`, keeps every publish of the device inside that.
class TokenBucket {
public:
    TokenBucket(uint32_t burst, uint32_t refillMs);
    void reset(uint32_t now);  // full bucket
    bool available(uint32_t now);
    bool take(uint32_t now);   // true (and one token spent) if a publish may go now
    uint32_t tokens() const { return tokens_; }

private:
    void refill(uint32_t now);

    uint32_t burst_;
    uint32_t refillMs_;
    uint32_t tokens_;
    uint32_t last_;
};

// Small deterministic PRNG (xorshift32) for jitter; seeded from the device's hardware RNG.
class Jitter {
public:
    explicit Jitter(uint32_t seed = 0x9e3779b9u) { seed_(seed); }
    void seed(uint32_t s) { seed_(s); }
    uint32_t next();
    // A value in [0, bound]; 0 when bound is 0.
    uint32_t upTo(uint32_t bound);

private:
    void seed_(uint32_t s) { state_ = s ? s : 0x9e3779b9u; }
    uint32_t state_;
};

// Exponential backoff: first, first*2, ... up to max, each plus up to jitterPercent % of itself.
class Backoff {
public:
    Backoff(uint32_t firstMs, uint32_t maxMs, uint32_t jitterPercent);
    void reset() { current_ = 0; }
    // The next wait, and advances the sequence.
    uint32_t next(Jitter& jitter);
    uint32_t firstMs() const { return first_; }
    uint32_t maxMs() const { return max_; }
    uint32_t jitterPercent() const { return jitterPercent_; }

private:
    uint32_t first_;
    uint32_t max_;
    uint32_t jitterPercent_;
    uint32_t current_;  // 0 before the first wait
};

}  // namespace tokenflow
