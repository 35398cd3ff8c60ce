// src/main.cpp itself, built against the host stand-in of Device OS (test/shim) and run through one
// device's life: boot with a stale flash copy, first sync, revoke, new token, malformed value. The
// steps run in order (one application, one setup()).
#include <string>

#include "json_reader.h"
#include "minitest.h"
#include "shim_control.h"

namespace {

const char* kTokenA = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl";  // fingerprint 8ce128206841
const char* kTokenB = "P-0ekUL3EjrEkE_UnIIzsIggqyQXYd0z";  // fingerprint 7eb1da9541bd
constexpr uint8_t kPrivate = 0x01;
constexpr uint8_t kWithAck = 0x08;
constexpr int64_t kSyncedAt = 1767225600000;  // lastSynced(): ms since the epoch

uint32_t g_now = 0;

void runFor(uint32_t ms) {
    for (uint32_t end = g_now + ms; g_now != end; g_now += 10) {
        shim::setMillis(g_now);
        loop();
    }
}

LedgerData ledger(const char* token, const char* state) {
    LedgerData d;
    if (token != nullptr) d.set("blynk_token", token);
    if (state != nullptr) d.set("state", state);
    return d;
}

std::string lastStatus() {
    const auto s = shim::publishesNamed("tokenflow/status");
    return s.empty() ? "" : s.back().data;
}

size_t dataWith(const char* token) {
    size_t n = 0;
    for (const auto& p : shim::publishesNamed("blynk_https_get")) {
        if (testjson::parse(p.data)["t"].string == token) ++n;
    }
    return n;
}

}  // namespace

TEST(app_1_setup_reads_the_flash_copy_registers_blynk_led_and_the_led_pin) {
    // Revoked in the cloud while the device was off: the flash copy still holds token A.
    shim::setLedger("blynk-tokens-c2d", ledger(kTokenA, "active"), kSyncedAt);
    shim::setMillis(0);
    setup();
    CHECK(shim::ledgerRequested("blynk-tokens-c2d"));
    CHECK(shim::pinIsOutput(D7));  // a Boron: the blue LED on D7
    CHECK(shim::callFunction("blynk_led", "sideways") == -1);
    CHECK(shim::publishes().empty());  // offline
}

TEST(app_2_boot_reports_the_flash_copy_with_ack_but_sends_no_data_before_the_first_sync) {
    runFor(5000);
    CHECK(shim::publishes().empty());
    shim::setConnected(true);
    runFor(20000);
    const auto status = shim::publishesNamed("tokenflow/status");
    CHECK_EQ(status.size(), 1u);
    if (!status.empty()) {
        // synced=0: the flash copy, not yet confirmed by a sync since this boot
        CHECK_STR(status[0].data, "v=1;token=8ce128206841;fw=1.0.0;synced=0");
        CHECK_EQ(status[0].flags, kPrivate | kWithAck);
    }
    CHECK(shim::publishesNamed("blynk_https_get").empty());
}

TEST(app_3_cleared_state_sync_stops_the_token_and_reports_the_reason) {
    shim::syncLedger("blynk-tokens-c2d", ledger("", "revoked"), kSyncedAt + 25000);
    runFor(200000);  // far past the 60 s grace time
    CHECK_STR(lastStatus(), "v=1;token=none;fw=1.0.0;synced=1;reason=revoked");
    CHECK_EQ(dataWith(kTokenA), 0u);
    CHECK(shim::publishesNamed("tokenflow/status").size() >= 4);  // asks again with the backoff
}

TEST(app_4_delivered_token_sends_data_without_ack_and_status_with_ack) {
    shim::syncLedger("blynk-tokens-c2d", ledger(kTokenB, "active"), kSyncedAt + 225000);
    runFor(2000);
    CHECK_STR(lastStatus(), "v=1;token=7eb1da9541bd;fw=1.0.0;synced=1");
    CHECK_EQ(shim::publishesNamed("tokenflow/status").back().flags, kPrivate | kWithAck);
    const auto data = shim::publishesNamed("blynk_https_get");
    CHECK_EQ(data.size(), 1u);
    if (!data.empty()) {
        CHECK_EQ(data[0].flags, kPrivate);
        const auto doc = testjson::parse(data[0].data);
        CHECK_STR(doc["t"].string, kTokenB);
        CHECK_STR(doc["v16"].string, "0");
    }
}

TEST(app_5_blynk_led_switches_the_pin_and_sends_the_readings) {
    CHECK(shim::callFunction("blynk_led", "on") == 1);
    runFor(2000);
    CHECK(!shim::pinWrites().empty());
    if (!shim::pinWrites().empty()) {
        CHECK_EQ(shim::pinWrites().back().pin, static_cast<hal_pin_t>(D7));
        CHECK_EQ(shim::pinWrites().back().value, static_cast<uint8_t>(HIGH));
    }
    const auto data = shim::publishesNamed("blynk_https_get");
    CHECK_EQ(data.size(), 2u);
    if (data.size() == 2) CHECK_STR(testjson::parse(data[1].data)["v16"].string, "1");
}

TEST(app_6_sync_callbacks_for_other_or_invalid_ledgers_are_ignored) {
    const size_t before = shim::publishes().size();
    // The flash copy changes without a sync of this Ledger: nothing may re-read it.
    shim::setLedger("blynk-tokens-c2d", ledger("", "transferred"), kSyncedAt + 300000);
    shim::syncForeignLedger();
    runFor(2000);
    CHECK_EQ(shim::publishes().size(), before);
    CHECK_STR(lastStatus(), "v=1;token=7eb1da9541bd;fw=1.0.0;synced=1");
}

TEST(app_7_malformed_value_is_reported_invalid_and_never_sent) {
    LedgerData d;
    d.set("blynk_token", 12345);
    d.set("state", "active");
    shim::syncLedger("blynk-tokens-c2d", d, kSyncedAt + 400000);
    const size_t dataBefore = shim::publishesNamed("blynk_https_get").size();
    runFor(400000);
    CHECK_STR(lastStatus(), "v=1;token=invalid;fw=1.0.0;synced=1");
    CHECK_EQ(shim::publishesNamed("blynk_https_get").size(), dataBefore);
}

TEST(app_8_transfer_clears_the_token_with_its_reason) {
    shim::syncLedger("blynk-tokens-c2d", ledger(kTokenA, "active"), kSyncedAt + 900000);
    runFor(2000);
    CHECK_EQ(dataWith(kTokenA), 1u);
    shim::syncLedger("blynk-tokens-c2d", ledger("", "transferred"), kSyncedAt + 902000);
    runFor(400000);
    CHECK_EQ(dataWith(kTokenA), 1u);
    CHECK_STR(lastStatus(), "v=1;token=none;fw=1.0.0;synced=1;reason=transferred");
}

TEST(app_9_logs_never_carry_a_token) {
    CHECK(shim::logLines().size() >= 5);
    bool sawReason = false;
    for (const auto& line : shim::logLines()) {
        CHECK(line.find(kTokenA) == std::string::npos);
        CHECK(line.find(kTokenB) == std::string::npos);
        sawReason = sawReason || line.find("cleared by the cloud (revoked)") != std::string::npos;
    }
    CHECK(sawReason);
}
