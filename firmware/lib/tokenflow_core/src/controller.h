// The device's whole token logic, free of Device OS: it is told what the Ledger holds, whether the
// cloud is connected and what time it is, and decides what to publish and when. main.cpp only feeds
// it and carries out its publishes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "json_writer.h"
#include "pacing.h"
#include "status.h"
#include "token.h"

namespace tokenflow {

struct ControllerConfig {
    const char* firmwareVersion = "0.0.0";
    const char* statusEvent = "tokenflow/status";
    const char* dataEvent = "blynk_https_get";
    uint32_t dataIntervalMs = 300000;        // the blueprint's 5 minutes
    uint32_t statusFirstRetryMs = 5000;      // without a token: report again after 5 s, 10 s, 20 s, ...
    uint32_t statusMaxRetryMs = 600000;      // ... up to every 10 minutes
    uint32_t statusJitterPercent = 20;       // each wait lengthened by up to this much, spreading a fleet
    uint32_t heartbeatMs = 86400000;         // with a token: one report a day besides connect/sync (0: none)
    uint32_t publishRetryMs = 10000;         // after a failed publish
    uint32_t publishBurst = 4;               // Particle: bursts of up to 4 ...
    uint32_t publishRefillMs = 1000;         // ... and about 1 event per second
};

// Carries out one publish; Device OS in main.cpp, a recorder in the tests.
class Publisher {
public:
    virtual ~Publisher() = default;
    virtual bool publish(const char* event, const char* data) = 0;
    virtual size_t maxDataSize() = 0;  // Particle.maxEventDataSize(); 0 while unknown
};

// Adds the readings after "t" in the Blynk payload.
class Telemetry {
public:
    virtual ~Telemetry() = default;
    virtual void addFields(JsonObjectWriter& out) = 0;
};

enum class Published { Nothing, Status, Data };

class Controller {
public:
    static constexpr size_t kMaxPayload = 1024;  // largest event data on any current device

    explicit Controller(const ControllerConfig& config = ControllerConfig());

    void begin(uint32_t now, uint32_t seed);

    // What the Ledger holds under the token key: nullptr if the key is absent. `synced`: the Ledger has
    // synced with the cloud at least once (lastSynced() != 0). `fromSync`: this read follows a sync,
    // which the device acknowledges with a status report.
    void ledgerRead(const char* value, bool synced, bool fromSync, uint32_t now);

    // Send the readings at the next chance (the blueprint's blynk_led function does this).
    void requestData() { dataPending_ = true; }

    // Call from loop(): publishes at most one event.
    Published loop(uint32_t now, bool connected, Publisher& publisher, Telemetry& telemetry);

    TokenState tokenState() const { return state_; }
    bool hasToken() const { return state_ == TokenState::Valid; }
    const char* token() const { return token_; }              // "" without a valid token
    const char* fingerprint() const { return fingerprint_; }  // "" without a valid token
    bool synced() const { return synced_; }
    uint32_t statusWaitMs() const { return statusWait_; }     // next repeat after the last report (0: none)

    struct Counters {
        uint32_t statusSent = 0;
        uint32_t dataSent = 0;
        uint32_t publishFailures = 0;
        uint32_t oversize = 0;  // payloads dropped because they exceeded maxDataSize()
        uint32_t tokenChanges = 0;
    };
    const Counters& counters() const { return counters_; }

private:
    bool statusDue(uint32_t now) const;
    bool dataDue(uint32_t now) const;
    Published sendStatus(uint32_t now, Publisher& publisher);
    Published sendData(uint32_t now, Publisher& publisher, Telemetry& telemetry);
    void askForStatus();

    ControllerConfig config_;
    TokenBucket bucket_;
    Backoff backoff_;
    Jitter jitter_;

    TokenState state_ = TokenState::None;
    char token_[kTokenLength + 1] = {};
    char fingerprint_[kFingerprintLength + 1] = {};
    bool synced_ = false;
    bool connected_ = false;

    bool statusPending_ = false;  // a report is asked for now (connect, sync, token change)
    bool statusFailed_ = false;   // the last attempt failed: wait publishRetryMs
    uint32_t statusLast_ = 0;     // time of the last attempt
    uint32_t statusWait_ = 0;     // repeat this long after a successful report (0: no repeat)

    bool dataPending_ = false;
    bool dataFailed_ = false;
    uint32_t dataLast_ = 0;

    Counters counters_;
    char payload_[kMaxPayload + 1] = {};
};

}  // namespace tokenflow
