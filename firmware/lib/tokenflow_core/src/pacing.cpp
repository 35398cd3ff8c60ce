#include "pacing.h"

namespace tokenflow {

TokenBucket::TokenBucket(uint32_t burst, uint32_t refillMs)
    : burst_(burst ? burst : 1), refillMs_(refillMs ? refillMs : 1), tokens_(burst_), last_(0) {}

void TokenBucket::reset(uint32_t now) {
    tokens_ = burst_;
    last_ = now;
}

void TokenBucket::refill(uint32_t now) {
    const uint32_t gained = elapsed(now, last_) / refillMs_;
    if (gained == 0) {
        return;
    }
    if (gained >= burst_ - tokens_) {
        tokens_ = burst_;
        last_ = now;  // a full bucket does not save up time
    } else {
        tokens_ += gained;
        last_ += gained * refillMs_;  // keep the remainder towards the next token
    }
}

bool TokenBucket::available(uint32_t now) {
    refill(now);
    return tokens_ > 0;
}

bool TokenBucket::take(uint32_t now) {
    refill(now);
    if (tokens_ == 0) {
        return false;
    }
    if (tokens_ == burst_) {
        last_ = now;  // refill time counts from the first token spent out of a full bucket
    }
    --tokens_;
    return true;
}

uint32_t Jitter::next() {
    uint32_t x = state_;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    state_ = x;
    return x;
}

uint32_t Jitter::upTo(uint32_t bound) {
    if (bound == 0) {
        return 0;
    }
    if (bound == UINT32_MAX) {
        return next();
    }
    return next() % (bound + 1);
}

Backoff::Backoff(uint32_t firstMs, uint32_t maxMs, uint32_t jitterPercent)
    : first_(firstMs ? firstMs : 1),
      max_(maxMs < first_ ? first_ : maxMs),
      jitterPercent_(jitterPercent > 100 ? 100 : jitterPercent),
      current_(0) {}

uint32_t Backoff::next(Jitter& jitter) {
    if (current_ == 0) {
        current_ = first_;
    } else {
        current_ = (current_ > max_ / 2) ? max_ : current_ * 2;
    }
    // Jitter only lengthens the wait, so the first report after a trigger stays prompt and the cap
    // is exceeded by at most jitterPercent %.
    const uint32_t spread = static_cast<uint32_t>((static_cast<uint64_t>(current_) * jitterPercent_) / 100);
    return current_ + jitter.upTo(spread);
}

}  // namespace tokenflow
