// The device's behaviour, driven through time with a recording publisher: what it publishes, when,
// and never what it must not.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "controller.h"
#include "json_reader.h"
#include "minitest.h"

using tokenflow::Controller;
using tokenflow::ControllerConfig;
using tokenflow::Published;
using tokenflow::TokenState;

namespace {

const char* kTokenA = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl";
const char* kTokenB = "P-0ekUL3EjrEkE_UnIIzsIggqyQXYd0z";
const char* kFpA = "8ce128206841";
const char* kFpB = "7eb1da9541bd";

struct Event {
    uint32_t at;
    std::string name;
    std::string data;
};

class RecordingPublisher : public tokenflow::Publisher {
public:
    bool publish(const char* event, const char* data) override {
        ++attempts;
        if (failing) return false;
        events.push_back(Event{now, event, data});
        return true;
    }
    size_t maxDataSize() override { return maxSize; }

    std::vector<Event> named(const std::string& name) const {
        std::vector<Event> out;
        for (const auto& e : events) {
            if (e.name == name) out.push_back(e);
        }
        return out;
    }

    std::vector<Event> events;
    uint32_t now = 0;
    size_t maxSize = 1024;
    bool failing = false;
    int attempts = 0;
};

class FakeTelemetry : public tokenflow::Telemetry {
public:
    void addFields(tokenflow::JsonObjectWriter& out) override {
        out.addUnsigned("v14", uptime).addFixed("v15", 3.14159, 6).addUnsigned("v16", 1).addUnsigned("v17", 1);
        if (!extra.empty()) out.addString("v18", extra.c_str());
    }
    uint32_t uptime = 0;
    std::string extra;
};

ControllerConfig quietConfig() {
    ControllerConfig c;
    c.firmwareVersion = "1.2.3";
    c.statusJitterPercent = 0;  // exact times in most tests; jitter has its own test
    return c;
}

// Steps the controller from `from` to `to` (exclusive) every `step` ms, like loop() on the device.
void run(Controller& controller, RecordingPublisher& pub, FakeTelemetry& tel, uint32_t from, uint32_t to, bool connected,
         uint32_t step = 10) {
    for (uint32_t t = from; t != to; t += step) {
        pub.now = t;
        tel.uptime = t;
        controller.loop(t, connected, pub, tel);
    }
}

std::string statusData(const char* token, bool synced) {
    return std::string("v=1;token=") + token + ";fw=1.2.3;synced=" + (synced ? "1" : "0");
}

}  // namespace

TEST(controller_new_device_reports_none_at_once_then_backs_off_and_never_sends_data) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(nullptr, false, false, 0);  // boot: nothing cached
    run(controller, pub, tel, 0, 2000, false);
    CHECK(pub.events.empty());  // offline: nothing
    run(controller, pub, tel, 2000, 700000, true);
    const auto status = pub.named("tokenflow/status");
    CHECK(pub.named("blynk_https_get").empty());
    // At connect, then 5 s, 10 s, 20 s, ... apart, capped at 10 minutes.
    const uint32_t expectedGaps[] = {5000, 10000, 20000, 40000, 80000, 160000, 320000};
    CHECK(status.size() == 1 + sizeof(expectedGaps) / sizeof(expectedGaps[0]));
    if (!status.empty()) {
        CHECK_EQ(status[0].at, 2000u);
        CHECK_STR(status[0].data, statusData("none", false));
    }
    for (size_t i = 1; i < status.size() && i <= 7; ++i) CHECK_EQ(status[i].at - status[i - 1].at, expectedGaps[i - 1]);
    // Keeps asking every 10 minutes, indefinitely, at a low rate.
    run(controller, pub, tel, 700000, 700000 + 3 * 3600000, true, 50);
    const auto later = pub.named("tokenflow/status");
    for (size_t i = 8; i < later.size(); ++i) CHECK_EQ(later[i].at - later[i - 1].at, 600000u);
    CHECK(later.size() >= 8 + 17);
    CHECK(pub.named("blynk_https_get").empty());
}

TEST(controller_token_arrives_by_sync_status_then_data_with_that_token) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(nullptr, false, false, 0);
    run(controller, pub, tel, 0, 3000, true);  // status none at 0
    controller.ledgerRead(kTokenA, true, true, 3000);
    CHECK(controller.hasToken());
    CHECK_STR(controller.fingerprint(), kFpA);
    run(controller, pub, tel, 3000, 3000 + 2 * 300000 + 100, true);
    const auto status = pub.named("tokenflow/status");
    CHECK_EQ(status.size(), 2u);
    if (status.size() == 2) {
        CHECK_EQ(status[1].at, 3000u);  // within the loop pass after the sync
        CHECK_STR(status[1].data, statusData(kFpA, true));
    }
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 3u);  // right away, then every 5 minutes
    if (data.size() == 3) {
        CHECK(data[0].at <= 3010);
        CHECK_EQ(data[1].at - data[0].at, 300000u);
        CHECK_EQ(data[2].at - data[1].at, 300000u);
        const auto doc = testjson::parse(data[0].data);
        CHECK_STR(doc["t"].string, kTokenA);
        CHECK(doc.has("v14") && doc.has("v15") && doc.has("v16") && doc.has("v17"));
    }
}

TEST(controller_cached_token_at_boot_is_used_once_connected) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);  // from flash, before the cloud connects
    run(controller, pub, tel, 0, 5000, false);
    CHECK(pub.events.empty());
    run(controller, pub, tel, 5000, 6000, true);
    CHECK_EQ(pub.events.size(), 2u);
    if (pub.events.size() == 2) {
        CHECK_STR(pub.events[0].name, "tokenflow/status");
        CHECK_STR(pub.events[0].data, statusData(kFpA, true));
        CHECK_STR(pub.events[1].name, "blynk_https_get");
    }
    // With a token, no repeats beyond connect/sync (the heartbeat is a day away).
    run(controller, pub, tel, 6000, 3600000, true, 100);
    CHECK_EQ(pub.named("tokenflow/status").size(), 1u);
}

TEST(controller_invalid_token_is_reported_and_never_sent) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead("not-a-token", true, false, 0);
    CHECK(controller.tokenState() == TokenState::Invalid);
    CHECK_STR(controller.token(), "");
    controller.requestData();  // even when asked (blynk_led)
    run(controller, pub, tel, 0, 100000, true);
    CHECK(pub.named("blynk_https_get").empty());
    const auto status = pub.named("tokenflow/status");
    CHECK(status.size() >= 4);  // repeats with backoff like a device without a token
    for (const auto& e : status) CHECK_STR(e.data, statusData("invalid", true));
}

TEST(controller_switches_tokens_at_once_on_transfer) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 100000, true);
    controller.ledgerRead(kTokenB, true, true, 100000);
    CHECK_STR(controller.token(), kTokenB);
    run(controller, pub, tel, 100000, 100000 + 300000 + 100, true);
    bool sawB = false;
    for (const auto& e : pub.named("blynk_https_get")) {
        const std::string t = testjson::parse(e.data)["t"].string;
        if (e.at < 100000) CHECK_STR(t, kTokenA);
        if (e.at >= 100000) {
            CHECK_STR(t, kTokenB);
            sawB = true;
        }
    }
    CHECK(sawB);
    const auto status = pub.named("tokenflow/status");
    CHECK(!status.empty() && status.back().data == statusData(kFpB, true));
    CHECK_EQ(controller.counters().tokenChanges, 2u);
}

TEST(controller_revoke_stops_data_immediately_and_asks_again_quickly) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    run(controller, pub, tel, 0, 200000, true, 20);  // no token for a while: the backoff has grown
    controller.ledgerRead(kTokenA, true, true, 200000);
    run(controller, pub, tel, 200000, 1000000, true, 20);
    const size_t dataBefore = pub.named("blynk_https_get").size();
    CHECK_EQ(dataBefore, 3u);  // at 200 s, 500 s, 800 s
    controller.ledgerRead(nullptr, true, true, 1000000);  // Ledger instance deleted
    CHECK(!controller.hasToken());
    controller.requestData();
    run(controller, pub, tel, 1000000, 1016000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), dataBefore);
    const auto status = pub.named("tokenflow/status");
    // none at once, then again after 5 s and 10 s: the backoff starts over.
    CHECK(status.size() >= 3);
    if (status.size() >= 3) {
        const size_t n = status.size();
        CHECK_EQ(status[n - 3].at, 1000000u);
        CHECK_STR(status[n - 3].data, statusData("none", true));
        CHECK_EQ(status[n - 2].at, 1005000u);
        CHECK_EQ(status[n - 1].at, 1015000u);
    }
}

TEST(controller_repeated_syncs_never_exceed_the_publish_limit) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    for (uint32_t t = 0; t < 20000; t += 10) {
        // A sync every 50 ms, alternating tokens, plus blynk_led calls: far more than may go out.
        if (t % 50 == 0) controller.ledgerRead((t / 50) % 2 ? kTokenA : kTokenB, true, true, t);
        if (t % 30 == 0) controller.requestData();
        pub.now = t;
        controller.loop(t, true, pub, tel);
    }
    CHECK(pub.events.size() >= 20);
    CHECK(pub.events.size() <= 4 + 20);
    // No one-second window holds more than the burst plus one refill.
    for (size_t i = 0; i < pub.events.size(); ++i) {
        size_t inWindow = 0;
        for (size_t k = i; k < pub.events.size() && pub.events[k].at - pub.events[i].at < 1000; ++k) ++inWindow;
        CHECK(inWindow <= 5);
    }
}

TEST(controller_failed_publish_is_retried_after_a_pause_not_every_loop) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    pub.failing = true;
    run(controller, pub, tel, 0, 30000, true);
    // status + data at connect, then one retry of each every 10 s: 2 + 2 + 2 = 6 attempts by 30 s
    CHECK_EQ(pub.attempts, 6);
    CHECK_EQ(controller.counters().publishFailures, 6u);
    pub.failing = false;
    run(controller, pub, tel, 30000, 31000, true);
    CHECK_EQ(pub.named("tokenflow/status").size(), 1u);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
}

TEST(controller_payload_over_the_device_limit_is_dropped_not_truncated) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    pub.maxSize = 255;  // some cellular modems allow less than 1024 bytes
    tel.extra = std::string(300, 'x');
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 1000, true);
    CHECK_EQ(pub.named("tokenflow/status").size(), 1u);
    CHECK(pub.named("blynk_https_get").empty());
    CHECK_EQ(controller.counters().oversize, 1u);
    // Just under the limit goes out, and every event respects it.
    tel.extra = std::string(100, 'x');
    controller.requestData();
    run(controller, pub, tel, 1000, 2000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
    for (const auto& e : pub.events) CHECK(e.data.size() <= 255);
}

TEST(controller_status_never_carries_the_token) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 10000, true);
    controller.ledgerRead(kTokenB, true, true, 10000);
    run(controller, pub, tel, 10000, 20000, true);
    CHECK(!pub.named("tokenflow/status").empty());
    for (const auto& e : pub.named("tokenflow/status")) {
        CHECK(e.data.find(kTokenA) == std::string::npos);
        CHECK(e.data.find(kTokenB) == std::string::npos);
    }
}

TEST(controller_reconnect_reports_again_and_restarts_backoff) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    run(controller, pub, tel, 0, 200000, true);  // none: 0, 5, 15, 35, 75, 155 s
    const size_t before = pub.named("tokenflow/status").size();
    CHECK_EQ(before, 6u);
    run(controller, pub, tel, 200000, 210000, false);
    run(controller, pub, tel, 210000, 216000, true);
    const auto status = pub.named("tokenflow/status");
    CHECK_EQ(status.size(), before + 2);
    if (status.size() == before + 2) {
        CHECK_EQ(status[before].at, 210000u);
        CHECK_EQ(status[before + 1].at, 215000u);
    }
}

TEST(controller_daily_heartbeat_with_a_token) {
    ControllerConfig config = quietConfig();
    config.dataIntervalMs = 3600000;  // keep the event count small
    Controller controller(config);
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 2 * 86400000u + 1000, true, 500);
    const auto status = pub.named("tokenflow/status");
    CHECK_EQ(status.size(), 3u);
    if (status.size() == 3) {
        CHECK_EQ(status[1].at - status[0].at, 86400000u);
        CHECK_EQ(status[2].at - status[1].at, 86400000u);
    }
}

TEST(controller_blynk_led_request_publishes_data_promptly) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 60000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
    controller.requestData();
    run(controller, pub, tel, 60000, 60100, true);
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 2u);
    if (data.size() == 2) CHECK_EQ(data[1].at, 60000u);
}

TEST(controller_works_across_millis_wraparound) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    const uint32_t start = UINT32_MAX - 100000;  // wraps 100 s in
    controller.begin(start, 1);
    controller.ledgerRead(kTokenA, true, false, start);
    run(controller, pub, tel, start, start + 700000, true);
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 3u);
    if (data.size() == 3) {
        CHECK_EQ(data[1].at - data[0].at, 300000u);
        CHECK_EQ(data[2].at - data[1].at, 300000u);
    }
}

TEST(controller_jitter_spreads_repeats_within_bounds) {
    ControllerConfig config = quietConfig();
    config.statusJitterPercent = 20;
    std::vector<uint32_t> firstRepeat;
    for (uint32_t seed = 1; seed <= 20; ++seed) {
        Controller controller(config);
        RecordingPublisher pub;
        FakeTelemetry tel;
        controller.begin(0, seed * 7919);
        run(controller, pub, tel, 0, 7000, true);
        const auto status = pub.named("tokenflow/status");
        CHECK_EQ(status.size(), 2u);
        if (status.size() == 2) {
            CHECK(status[1].at >= 5000 && status[1].at <= 6010);
            firstRepeat.push_back(status[1].at);
        }
    }
    bool differ = false;
    for (uint32_t t : firstRepeat) differ = differ || t != firstRepeat.front();
    CHECK(differ);
}

TEST(controller_defaults_match_the_blueprint_and_particle_limits) {
    const ControllerConfig c;
    CHECK_EQ(c.dataIntervalMs, 300000u);
    CHECK_STR(c.dataEvent, "blynk_https_get");
    CHECK_STR(c.statusEvent, "tokenflow/status");
    CHECK_EQ(c.publishBurst, 4u);
    CHECK_EQ(c.publishRefillMs, 1000u);
}

TEST(controller_waits_while_the_event_size_is_unknown) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    pub.maxSize = 0;  // Particle.maxEventDataSize() < 0 just before the connection settles
    run(controller, pub, tel, 0, 2000, true);
    CHECK(pub.events.empty());
    CHECK_EQ(controller.counters().oversize, 0u);
    pub.maxSize = 1024;
    run(controller, pub, tel, 2000, 2100, true);
    CHECK_EQ(pub.events.size(), 2u);
}
