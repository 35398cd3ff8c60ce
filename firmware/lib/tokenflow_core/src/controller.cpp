#include "controller.h"

#include <cstring>

namespace tokenflow {

Controller::Controller(const ControllerConfig& config)
    : config_(config),
      bucket_(config.publishBurst, config.publishRefillMs),
      backoff_(config.statusFirstRetryMs, config.statusMaxRetryMs, config.statusJitterPercent) {}

void Controller::begin(uint32_t now, uint32_t seed) {
    jitter_.seed(seed);
    bucket_.reset(now);
    statusLast_ = now;
    dataLast_ = now;
    // As in the blueprint, the first readings go out as soon as the device is online with a token.
    dataPending_ = true;
}

void Controller::askForStatus() { statusPending_ = true; }

void Controller::wipeToken() {
    // Every copy of the token this object made: the token, its fingerprint, and the last Blynk payload.
    memset(token_, 0, sizeof(token_));
    memset(fingerprint_, 0, sizeof(fingerprint_));
    memset(payload_, 0, sizeof(payload_));
}

bool Controller::holdsNoTokenBytes() const {
    for (char c : token_) {
        if (c != 0) return false;
    }
    for (char c : fingerprint_) {
        if (c != 0) return false;
    }
    for (char c : payload_) {
        if (c != 0) return false;
    }
    return true;
}

void Controller::ledgerRead(const LedgerValue& value, bool synced, bool fromSync, uint32_t now) {
    (void)now;
    synced_ = synced;
    if (fromSync) {
        syncedSinceBoot_ = true;  // the cloud's current word: the flash copy is no longer in doubt
    }
    const LedgerVerdict verdict = judgeLedger(value);
    const bool changed = verdict.state != state_ || verdict.reason != reason_ ||
                         (verdict.state == TokenState::Valid && strcmp(value.token, token_) != 0);
    if (changed) {
        ++counters_.tokenChanges;
        // Switch at once: from the next publish on only the new token (or none) is used, and the old
        // one is gone from RAM.
        wipeToken();
        if (verdict.state == TokenState::Valid) {
            memcpy(token_, value.token, kTokenLength);
            tokenflow::fingerprint(token_, kTokenLength, fingerprint_);
            dataPending_ = true;  // let Blynk hear from the device under its new token right away
        } else {
            dataPending_ = false;  // a request for readings made under the old token dies with it
            dataFailed_ = false;
        }
        state_ = verdict.state;
        reason_ = verdict.reason;
        backoff_.reset();  // a device that just lost its token asks again within seconds
        askForStatus();
    }
    if (fromSync) {
        askForStatus();
    }
}

bool Controller::waitingForFirstSync(uint32_t now) const {
    if (syncedSinceBoot_) {
        return false;
    }
    if (config_.firstSyncGraceMs == 0 || !everConnected_) {
        return true;  // no bound, or the grace time has not started: it runs from the first connection
    }
    return elapsed(now, firstConnectAt_) < config_.firstSyncGraceMs;
}

bool Controller::statusDue(uint32_t now) const {
    if (statusPending_) {
        return !statusFailed_ || elapsed(now, statusLast_) >= config_.publishRetryMs;
    }
    return statusWait_ != 0 && elapsed(now, statusLast_) >= statusWait_;
}

bool Controller::dataDue(uint32_t now) const {
    if (state_ != TokenState::Valid) {
        return false;  // never publish to Blynk without a valid token
    }
    if (waitingForFirstSync(now)) {
        return false;  // the token may be a stale flash copy: wait for the cloud's word (or the grace time)
    }
    if (dataPending_) {
        return !dataFailed_ || elapsed(now, dataLast_) >= config_.publishRetryMs;
    }
    return elapsed(now, dataLast_) >= config_.dataIntervalMs;
}

CloudAccepted Controller::loop(uint32_t now, bool connected, Publisher& publisher, Telemetry& telemetry) {
    if (!connected) {
        connected_ = false;
        return CloudAccepted::Nothing;
    }
    if (!connected_) {
        connected_ = true;
        if (!everConnected_) {
            everConnected_ = true;
            firstConnectAt_ = now;
        }
        backoff_.reset();
        askForStatus();  // report after every (re)connect
    }
    // 0: the event size is not known yet (Device OS answers it only once connected): wait.
    if (publisher.maxDataSize() == 0 || !bucket_.available(now)) {
        return CloudAccepted::Nothing;
    }
    // The status report goes first: it is what gets a device without a token its token.
    if (statusDue(now)) {
        return sendStatus(now, publisher);
    }
    if (dataDue(now)) {
        return sendData(now, publisher, telemetry);
    }
    return CloudAccepted::Nothing;
}

CloudAccepted Controller::sendStatus(uint32_t now, Publisher& publisher) {
    char data[kStatusDataCapacity];
    const size_t len =
        // synced=1 only once the Ledger has synced since this boot: before that the report describes a
        // flash copy that may be stale (a revoke made while the device was offline), and the cloud waits
        // for the report after the sync rather than act on it (the simulated fleet does the same).
        formatStatusData(data, sizeof(data), state_, fingerprint_, config_.firmwareVersion, syncedSinceBoot_, reason_);
    statusLast_ = now;
    if (len == 0 || len > publisher.maxDataSize()) {
        // Cannot happen with a sane configuration; give up on this report rather than loop on it.
        ++counters_.oversize;
        statusPending_ = false;
        statusWait_ = hasToken() ? config_.heartbeatMs : backoff_.next(jitter_);
        return CloudAccepted::Nothing;
    }
    bucket_.take(now);
    // The status report is how the cloud learns what the device holds (and confirms or re-sends its
    // token): it asks for the cloud's acknowledgement.
    if (!publisher.publish(config_.statusEvent, data, Ack::Required)) {
        ++counters_.publishFailures;
        statusPending_ = true;
        statusFailed_ = true;
        return CloudAccepted::Nothing;
    }
    ++counters_.statusAccepted;
    statusPending_ = false;
    statusFailed_ = false;
    statusWait_ = hasToken() ? config_.heartbeatMs : backoff_.next(jitter_);
    return CloudAccepted::Status;
}

CloudAccepted Controller::sendData(uint32_t now, Publisher& publisher, Telemetry& telemetry) {
    size_t maxLen = publisher.maxDataSize();
    if (maxLen > kMaxPayload) {
        maxLen = kMaxPayload;
    }
    JsonObjectWriter writer(payload_, sizeof(payload_), maxLen);
    writer.addString("t", token_, kTokenLength);
    telemetry.addFields(writer);
    const size_t len = writer.finish();
    dataLast_ = now;
    if (len == 0) {
        // Too large for this device's event size: dropped (never truncated); tried again next interval.
        ++counters_.oversize;
        dataPending_ = false;
        dataFailed_ = false;
        return CloudAccepted::Nothing;
    }
    bucket_.take(now);
    // Readings repeat every interval; a lost one is replaced by the next, so the default suffices.
    if (!publisher.publish(config_.dataEvent, payload_, Ack::Default)) {
        ++counters_.publishFailures;
        dataPending_ = true;
        dataFailed_ = true;
        return CloudAccepted::Nothing;
    }
    ++counters_.dataAccepted;
    dataPending_ = false;
    dataFailed_ = false;
    return CloudAccepted::Data;
}

}  // namespace tokenflow
