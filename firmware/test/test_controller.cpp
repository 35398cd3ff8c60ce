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
using tokenflow::Ack;
using tokenflow::CloudAccepted;
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
    Ack ack;
};

class RecordingPublisher : public tokenflow::Publisher {
public:
    bool publish(const char* event, const char* data, Ack ack) override {
        ++attempts;
        if (failing) return false;
        events.push_back(Event{now, event, data, ack});
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

TEST(controller_cached_token_at_boot_reports_at_once_but_sends_data_only_after_the_first_sync) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);  // from flash, before the cloud connects
    run(controller, pub, tel, 0, 5000, false);
    CHECK(pub.events.empty());
    run(controller, pub, tel, 5000, 30000, true);
    // The status report goes out at once (it says what the flash copy holds, synced=0: not yet
    // confirmed by a sync since this boot) ...
    CHECK_EQ(pub.named("tokenflow/status").size(), 1u);
    if (!pub.events.empty()) {
        CHECK_STR(pub.events[0].name, "tokenflow/status");
        CHECK_EQ(pub.events[0].at, 5000u);
        CHECK_STR(pub.events[0].data, statusData(kFpA, false));
    }
    // ... but no data under a token the cloud may have revoked while the device was off.
    CHECK(pub.named("blynk_https_get").empty());
    CHECK(controller.waitingForFirstSync(30000));
    controller.ledgerRead(kTokenA, true, true, 30000);  // the sync: same token, now current
    CHECK(!controller.waitingForFirstSync(30000));
    run(controller, pub, tel, 30000, 31000, true);
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 1u);
    if (data.size() == 1) CHECK_EQ(data[0].at, 30010u);  // the loop pass after the sync's status report
    // With a token, no repeats beyond connect/sync (the heartbeat is a day away).
    run(controller, pub, tel, 31000, 3600000, true, 100);
    CHECK_EQ(pub.named("tokenflow/status").size(), 2u);
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
    // never synced since boot: every report says so
    for (const auto& e : status) CHECK_STR(e.data, statusData("invalid", false));
}

TEST(controller_switches_tokens_at_once_on_transfer) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, 0);
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
    controller.ledgerRead(kTokenA, true, true, start);
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
    controller.ledgerRead(kTokenA, true, true, 0);
    pub.maxSize = 0;  // Particle.maxEventDataSize() < 0 just before the connection settles
    run(controller, pub, tel, 0, 2000, true);
    CHECK(pub.events.empty());
    CHECK_EQ(controller.counters().oversize, 0u);
    pub.maxSize = 1024;
    run(controller, pub, tel, 2000, 2100, true);
    CHECK_EQ(pub.events.size(), 2u);
}

// --- the cloud clears a token, the first sync after boot, delivery honesty (issue: stops on revoke) ---

namespace {

tokenflow::LedgerValue cleared(const char* state) { return tokenflow::LedgerValue::string("", state); }

std::string noneBecause(const char* reason) { return statusData("none", true) + ";reason=" + reason; }

size_t countData(const RecordingPublisher& pub, const char* token, uint32_t from) {
    size_t n = 0;
    for (const auto& e : pub.named("blynk_https_get")) {
        if (e.at >= from && testjson::parse(e.data)["t"].string == token) ++n;
    }
    return n;
}

}  // namespace

TEST(controller_cleared_state_while_connected_stops_data_at_once_wipes_the_token_and_reports_the_reason) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, true, 0);
    run(controller, pub, tel, 0, 400000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 2u);  // at 0 and 300 s
    CHECK(!controller.holdsNoTokenBytes());
    controller.requestData();  // a blynk_led call just before the revoke lands
    controller.ledgerRead(cleared("revoked"), true, true, 400000);
    // At once, before any loop pass: no token left anywhere in the controller.
    CHECK(controller.tokenState() == TokenState::None);
    CHECK(controller.clearReason() == tokenflow::ClearReason::Revoked);
    CHECK_STR(controller.token(), "");
    CHECK(controller.holdsNoTokenBytes());
    run(controller, pub, tel, 400000, 1400000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 2u);  // nothing after the revoke, ever
    const auto status = pub.named("tokenflow/status");
    std::vector<Event> after;
    for (const auto& e : status) {
        if (e.at >= 400000) after.push_back(e);
    }
    // Reported at once, then again with the restarted backoff (5 s, 10 s, ...): back to waiting.
    CHECK(after.size() >= 3);
    if (after.size() >= 3) {
        CHECK_EQ(after[0].at, 400000u);
        CHECK_EQ(after[1].at - after[0].at, 5000u);
        CHECK_EQ(after[2].at - after[1].at, 10000u);
    }
    for (const auto& e : after) CHECK_STR(e.data, noneBecause("revoked"));
}

TEST(controller_cleared_state_synced_after_an_offline_boot_never_sends_the_stale_token) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);  // flash copy: revoked in the cloud while off
    controller.requestData();
    run(controller, pub, tel, 0, 20000, false);
    run(controller, pub, tel, 20000, 35000, true);  // online; the sync takes 15 s to land
    CHECK(pub.named("blynk_https_get").empty());
    controller.ledgerRead(cleared("transferred"), true, true, 35000);
    CHECK(controller.holdsNoTokenBytes());
    run(controller, pub, tel, 35000, 35000 + 2 * 60000 + 100, true);  // well past the grace time
    CHECK(pub.named("blynk_https_get").empty());
    const auto status = pub.named("tokenflow/status");
    CHECK(status.size() >= 2);
    if (status.size() >= 2) {
        CHECK_STR(status[0].data, statusData(kFpA, false));  // the flash copy, reported as such at connect
        CHECK_STR(status[1].data, noneBecause("transferred"));
        CHECK_EQ(status[1].at, 35000u);
    }
}

TEST(controller_sync_after_the_grace_time_still_stops_a_revoked_token) {
    ControllerConfig config = quietConfig();
    config.firstSyncGraceMs = 60000;
    Controller controller(config);
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 10000, false);
    run(controller, pub, tel, 10000, 69000, true);
    CHECK(pub.named("blynk_https_get").empty());  // grace runs from the first connection (10 s)
    CHECK(controller.waitingForFirstSync(69000));
    run(controller, pub, tel, 69000, 71000, true);
    // No sync within 60 s of connecting: the flash copy is used.
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 1u);
    if (data.size() == 1) CHECK_EQ(data[0].at, 70000u);
    CHECK(!controller.waitingForFirstSync(71000));
    // A late sync carrying the revoke still stops it at once.
    run(controller, pub, tel, 71000, 100000, true);
    controller.ledgerRead(cleared("revoked"), true, true, 100000);
    run(controller, pub, tel, 100000, 700000, true);
    CHECK_EQ(countData(pub, kTokenA, 100000), 0u);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
    CHECK_STR(pub.named("tokenflow/status").back().data, noneBecause("revoked"));
}

TEST(controller_without_a_grace_bound_waits_for_the_sync_however_long) {
    ControllerConfig config = quietConfig();
    config.firstSyncGraceMs = 0;
    Controller controller(config);
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    run(controller, pub, tel, 0, 3600000, true, 100);
    CHECK(pub.named("blynk_https_get").empty());
    CHECK_EQ(pub.named("tokenflow/status").size(), 1u);
    controller.ledgerRead(kTokenA, true, true, 3600000);
    run(controller, pub, tel, 3600000, 3601000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
}

TEST(controller_a_sync_before_the_connection_opens_the_gate_at_once) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, false, 0);
    controller.ledgerRead(kTokenB, true, true, 500);  // synced while the cloud session was coming up
    run(controller, pub, tel, 1000, 2000, true);
    const auto data = pub.named("blynk_https_get");
    CHECK_EQ(data.size(), 1u);
    if (data.size() == 1) CHECK_STR(testjson::parse(data[0].data)["t"].string, kTokenB);
    CHECK_EQ(countData(pub, kTokenA, 0), 0u);
}

TEST(controller_malformed_ledger_value_stops_data_and_reports_invalid) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, true, 0);
    run(controller, pub, tel, 0, 10000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
    tokenflow::LedgerValue number;  // {"blynk_token": 12345}: not a string
    number.kind = tokenflow::LedgerValue::Kind::Other;
    number.state = "active";
    controller.ledgerRead(number, true, true, 10000);
    CHECK(controller.tokenState() == TokenState::Invalid);
    CHECK(controller.holdsNoTokenBytes());
    run(controller, pub, tel, 10000, 400000, true);
    CHECK_EQ(pub.named("blynk_https_get").size(), 1u);
    CHECK_STR(pub.named("tokenflow/status").back().data, statusData("invalid", true));
    // The cloud rewrites a good value: data resumes with it.
    controller.ledgerRead(tokenflow::LedgerValue::string(kTokenB, "active"), true, true, 400000);
    run(controller, pub, tel, 400000, 401000, true);
    CHECK_EQ(countData(pub, kTokenB, 400000), 1u);
}

TEST(controller_token_switched_twice_in_quick_succession_sends_only_the_last) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, true, 0);
    run(controller, pub, tel, 0, 100000, true);
    const size_t statusBefore = pub.named("tokenflow/status").size();
    // A -> B -> A between two loop passes (a transfer and its undo syncing back to back), then
    // A -> B -> cleared: each time only the last word counts.
    controller.ledgerRead(kTokenB, true, true, 100000);
    controller.ledgerRead(kTokenA, true, true, 100001);
    run(controller, pub, tel, 100010, 110000, true);
    CHECK_EQ(countData(pub, kTokenB, 100000), 0u);
    CHECK_STR(controller.token(), kTokenA);
    controller.ledgerRead(kTokenB, true, true, 110000);
    controller.ledgerRead(cleared("transferred"), true, true, 110001);
    run(controller, pub, tel, 110010, 120000, true);
    CHECK_EQ(countData(pub, kTokenB, 100000), 0u);
    CHECK_EQ(countData(pub, kTokenA, 110000), 0u);
    const auto status = pub.named("tokenflow/status");
    // One report per settled state, each the last word; nothing about the short-lived B.
    CHECK(status.size() >= statusBefore + 2);
    if (status.size() >= statusBefore + 2) {
        CHECK_STR(status[statusBefore].data, statusData(kFpA, true));
        CHECK_STR(status[statusBefore + 1].data, noneBecause("transferred"));
    }
    for (const auto& e : status) CHECK(e.data.find(kFpB) == std::string::npos);
    CHECK(controller.holdsNoTokenBytes());
}

TEST(controller_status_reports_ask_for_the_cloud_ack_and_data_does_not) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(kTokenA, true, true, 0);
    run(controller, pub, tel, 0, 5000, true);
    CHECK(!pub.named("tokenflow/status").empty());
    CHECK(!pub.named("blynk_https_get").empty());
    for (const auto& e : pub.named("tokenflow/status")) CHECK(e.ack == Ack::Required);
    for (const auto& e : pub.named("blynk_https_get")) CHECK(e.ack == Ack::Default);
    // A publish the cloud did not accept is not counted as accepted.
    pub.failing = true;
    controller.requestData();
    run(controller, pub, tel, 5000, 6000, true);
    CHECK_EQ(controller.counters().dataAccepted, 1u);
    CHECK_EQ(controller.counters().statusAccepted, 1u);
}

TEST(controller_a_token_after_a_revoke_drops_the_reason) {
    Controller controller(quietConfig());
    RecordingPublisher pub;
    FakeTelemetry tel;
    controller.begin(0, 1);
    controller.ledgerRead(cleared("revoked"), true, true, 0);
    run(controller, pub, tel, 0, 20000, true);
    CHECK_STR(pub.named("tokenflow/status").back().data, noneBecause("revoked"));
    controller.ledgerRead(tokenflow::LedgerValue::string(kTokenB, "active"), true, true, 20000);
    CHECK(controller.clearReason() == tokenflow::ClearReason::None);
    run(controller, pub, tel, 20000, 21000, true);
    CHECK_STR(pub.named("tokenflow/status").back().data, statusData(kFpB, true));
    CHECK_EQ(countData(pub, kTokenB, 20000), 1u);
}

// The shared vectors (test/vectors/ledger_states.json, also read by tests/unit/test_firmware_contract.py):
// each Ledger content, as Device OS hands it over, gives the agreed report and data decision.
TEST(controller_ledger_state_vectors_give_the_agreed_status_and_data) {
    const testjson::Value doc = testjson::parseFile(TOKENFLOW_LEDGER_VECTORS);
    const auto& list = doc["ledger_states"];
    CHECK(list.size() >= 10);
    for (const auto& v : list.array) {
        const auto& ledger = v["ledger"];
        tokenflow::LedgerValue value;
        std::string token;
        std::string state;
        if (ledger.has("state") && ledger["state"].kind == testjson::Value::Kind::String) {
            state = ledger["state"].string;
            value.state = state.c_str();
        }
        if (ledger.has("blynk_token")) {
            const auto& t = ledger["blynk_token"];
            if (t.kind == testjson::Value::Kind::String) {
                token = t.string;
                value.kind = tokenflow::LedgerValue::Kind::String;
                value.token = token.c_str();
            } else if (t.kind == testjson::Value::Kind::Null) {
                value.kind = tokenflow::LedgerValue::Kind::Null;
            } else {
                value.kind = tokenflow::LedgerValue::Kind::Other;
            }
        }
        ControllerConfig config = quietConfig();
        config.firmwareVersion = "1.0.0";
        Controller controller(config);
        RecordingPublisher pub;
        FakeTelemetry tel;
        controller.begin(0, 1);
        controller.ledgerRead("ghijklmnopqrstuvwxyz0123456789-_", true, true, 0);  // held another token before
        run(controller, pub, tel, 0, 2000, true);
        controller.ledgerRead(value, true, true, 2000);
        run(controller, pub, tel, 2000, 4000, true);
        const std::string name = v["name"].string;
        const auto status = pub.named("tokenflow/status");
        if (status.empty() || status.back().data != v["status"].string) {
            minitest::fail(__FILE__, __LINE__, name + ": status \"" + (status.empty() ? "" : status.back().data) +
                                                   "\" != \"" + v["status"].string + "\"");
        }
        const bool sent = countData(pub, token.c_str(), 2000) > 0;
        if (sent != v["sends_data"].boolean) minitest::fail(__FILE__, __LINE__, name + ": data decision differs");
        if (!v["sends_data"].boolean && !controller.holdsNoTokenBytes()) {
            minitest::fail(__FILE__, __LINE__, name + ": token bytes left in RAM");
        }
    }
}
