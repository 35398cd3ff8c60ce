#include <cstdint>

#include "minitest.h"
#include "pacing.h"

using tokenflow::Backoff;
using tokenflow::Jitter;
using tokenflow::TokenBucket;

TEST(bucket_allows_a_burst_of_four_then_one_per_second) {
    TokenBucket b(4, 1000);
    b.reset(0);
    for (int i = 0; i < 4; ++i) CHECK(b.take(0));
    CHECK(!b.take(0));
    CHECK(!b.take(999));
    CHECK(b.take(1000));
    CHECK(!b.take(1500));
    CHECK(b.take(2000));
    // Idle for long: back to a full burst, never more.
    for (int i = 0; i < 4; ++i) CHECK(b.take(60000));
    CHECK(!b.take(60000));
}

TEST(bucket_never_exceeds_the_particle_limit_over_a_minute) {
    // Try to publish every 10 ms for 60 s: at most 4 + 60 events may go.
    TokenBucket b(4, 1000);
    b.reset(5);
    int sent = 0;
    for (uint32_t t = 5; t <= 60005; t += 10) sent += b.take(t) ? 1 : 0;
    CHECK(sent <= 64);
    CHECK(sent >= 60);
}

TEST(bucket_survives_millis_wraparound) {
    TokenBucket b(4, 1000);
    const uint32_t start = UINT32_MAX - 1500;
    b.reset(start);
    for (int i = 0; i < 4; ++i) CHECK(b.take(start));
    CHECK(!b.take(start + 500));
    CHECK(b.take(start + 1000));
    CHECK(!b.take(start + 1999));  // still before the next refill, across the wrap
    CHECK(b.take(start + 2000));   // wrapped: start + 2000 == 499
}

TEST(backoff_doubles_to_its_cap_without_jitter) {
    Backoff backoff(5000, 600000, 0);
    Jitter j(1);
    const uint32_t expected[] = {5000, 10000, 20000, 40000, 80000, 160000, 320000, 600000, 600000};
    for (uint32_t e : expected) CHECK_EQ(backoff.next(j), e);
    backoff.reset();
    CHECK_EQ(backoff.next(j), 5000u);
}

TEST(backoff_jitter_stays_in_bounds_and_varies) {
    Backoff backoff(5000, 600000, 20);
    Jitter j(12345);
    bool varied = false;
    uint32_t first = 0;
    for (int round = 0; round < 50; ++round) {
        backoff.reset();
        const uint32_t w = backoff.next(j);
        CHECK(w >= 5000 && w <= 6000);
        if (round == 0) first = w;
        varied = varied || w != first;
        for (int i = 0; i < 12; ++i) {
            const uint32_t later = backoff.next(j);
            CHECK(later <= 720000);
        }
    }
    CHECK(varied);
}

TEST(jitter_up_to_bound) {
    Jitter j(0);  // a zero seed must not stick at zero
    bool nonzero = false;
    for (int i = 0; i < 100; ++i) {
        const uint32_t v = j.upTo(10);
        CHECK(v <= 10);
        nonzero = nonzero || v != 0;
    }
    CHECK(nonzero);
    CHECK_EQ(j.upTo(0), 0u);
}
