// The device's whole token logic, free of Device OS: it is told what the Ledger holds, whether the
// cloud is connected and what time it is, and decides what to publish and when. main.cpp only feeds
// it and carries out its publishes.
//
// What a successful publish means, and no more: Particle.publish() returned true, i.e. the Particle
// cloud acknowledged the event (status reports ask for WITH_ACK). It says nothing about whether the
// Blynk webhook ran, whether Blynk accepted the readings, or whether Tokenflow confirmed the token:
// those are only visible on the cloud side (hook-response events, the Tokenflow API). Hence the names
// below say "accepted by the cloud", never "delivered" or "confirmed".
#pragma once

#include <cstddef>
#include <cstdint>

#include "json_writer.h"
#include "ledger.h"
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
    // A Cloud-to-Device Ledger is read from flash at boot, before it has synced: the copy may hold a
    // token the cloud has since revoked. Data waits for the first Ledger sync after boot, or until
    // this long after the first cloud connection when no sync comes (the flash copy is then used).
    // 0: no bound, data waits for a sync however long it takes. Status reports never wait.
    uint32_t firstSyncGraceMs = 60000;
};

// How much a publish should insist on the cloud's acknowledgement.
enum class Ack {
    Default,   // Device OS's default: PRIVATE
    Required,  // WITH_ACK: the design counts on this event reaching the Particle cloud
};

// Carries out one publish; Device OS in main.cpp, a recorder in the tests.
class Publisher {
public:
    virtual ~Publisher() = default;
    // true: the Particle cloud accepted the event (see the note at the top of this file).
    virtual bool publish(const char* event, const char* data, Ack ack) = 0;
    virtual size_t maxDataSize() = 0;  // Particle.maxEventDataSize(); 0 while unknown
};

// Adds the readings after "t" in the Blynk payload.
class Telemetry {
public:
    virtual ~Telemetry() = default;
    virtual void addFields(JsonObjectWriter& out) = 0;
};

// What one loop pass handed to Device OS and the Particle cloud accepted.
enum class CloudAccepted { Nothing, Status, Data };

class Controller {
public:
    static constexpr size_t kMaxPayload = 1024;  // largest event data on any current device

    explicit Controller(const ControllerConfig& config = ControllerConfig());

    void begin(uint32_t now, uint32_t seed);

    // What the Ledger holds. `synced`: the Ledger has synced with the cloud at least once
    // (lastSynced() != 0; persists across reboots). `fromSync`: this read follows an onSync callback,
    // which the device acknowledges with a status report and which opens the first-sync gate.
    void ledgerRead(const LedgerValue& value, bool synced, bool fromSync, uint32_t now);
    // Shorthand: a string value (nullptr: no entry) without a `state` entry.
    void ledgerRead(const char* value, bool synced, bool fromSync, uint32_t now) {
        ledgerRead(LedgerValue::string(value), synced, fromSync, now);
    }

    // Send the readings at the next chance (the blueprint's blynk_led function does this).
    void requestData() { dataPending_ = true; }

    // Call from loop(): publishes at most one event.
    CloudAccepted loop(uint32_t now, bool connected, Publisher& publisher, Telemetry& telemetry);

    TokenState tokenState() const { return state_; }
    ClearReason clearReason() const { return reason_; }
    bool hasToken() const { return state_ == TokenState::Valid; }
    const char* token() const { return token_; }              // "" without a valid token
    const char* fingerprint() const { return fingerprint_; }  // "" without a valid token
    bool synced() const { return synced_; }
    bool syncedSinceBoot() const { return syncedSinceBoot_; }
    // Data is held back: no Ledger sync since boot and the grace time has not run out.
    bool waitingForFirstSync(uint32_t now) const;
    uint32_t statusWaitMs() const { return statusWait_; }     // next repeat after the last report (0: none)
    // No byte of the token is left in the controller's memory (token, fingerprint, last payload).
    bool holdsNoTokenBytes() const;

    struct Counters {
        uint32_t statusAccepted = 0;  // Particle.publish returned true for a status report
        uint32_t dataAccepted = 0;    // ... for a Blynk payload (not: Blynk accepted it)
        uint32_t publishFailures = 0;
        uint32_t oversize = 0;  // payloads dropped because they exceeded maxDataSize()
        uint32_t tokenChanges = 0;
    };
    const Counters& counters() const { return counters_; }

private:
    bool statusDue(uint32_t now) const;
    bool dataDue(uint32_t now) const;
    CloudAccepted sendStatus(uint32_t now, Publisher& publisher);
    CloudAccepted sendData(uint32_t now, Publisher& publisher, Telemetry& telemetry);
    void askForStatus();
    void wipeToken();

    ControllerConfig config_;
    TokenBucket bucket_;
    Backoff backoff_;
    Jitter jitter_;

    TokenState state_ = TokenState::None;
    ClearReason reason_ = ClearReason::None;
    char token_[kTokenLength + 1] = {};
    char fingerprint_[kFingerprintLength + 1] = {};
    bool synced_ = false;
    bool connected_ = false;

    bool syncedSinceBoot_ = false;  // an onSync has been seen since begin()
    bool everConnected_ = false;    // the first connection since begin() has happened ...
    uint32_t firstConnectAt_ = 0;   // ... at this time (the grace time runs from here)

    bool statusPending_ = false;  // a report is asked for now (connect, sync, token change)
    bool statusFailed_ = false;   // the last attempt failed: wait publishRetryMs
    uint32_t statusLast_ = 0;     // time of the last attempt
    uint32_t statusWait_ = 0;     // repeat this long after a successful report (0: no repeat)

    bool dataPending_ = false;
    bool dataFailed_ = false;
    uint32_t dataLast_ = 0;

    Counters counters_;
    char payload_[kMaxPayload + 1] = {};  // holds the token after a data publish: wiped with it
};

}  // namespace tokenflow
