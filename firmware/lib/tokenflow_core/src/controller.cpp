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

void Controller::ledgerRead(const char* value, bool synced, bool fromSync, uint32_t now) {
    (void)now;
    synced_ = synced;
    const TokenState state = classifyToken(value);
    const bool changed = state != state_ || (state == TokenState::Valid && strcmp(value, token_) != 0);
    if (changed) {
        ++counters_.tokenChanges;
        // Switch at once: from the next publish on only the new token (or none) is used.
        memset(token_, 0, sizeof(token_));
        memset(fingerprint_, 0, sizeof(fingerprint_));
        if (state == TokenState::Valid) {
            memcpy(token_, value, kTokenLength);
            tokenflow::fingerprint(token_, kTokenLength, fingerprint_);
            dataPending_ = true;  // let Blynk hear from the device under its new token right away
        }
        state_ = state;
        backoff_.reset();  // a device that just lost its token asks again within seconds
        askForStatus();
    }
    if (fromSync) {
        askForStatus();
    }
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
    if (dataPending_) {
        return !dataFailed_ || elapsed(now, dataLast_) >= config_.publishRetryMs;
    }
    return elapsed(now, dataLast_) >= config_.dataIntervalMs;
}

Published Controller::loop(uint32_t now, bool connected, Publisher& publisher, Telemetry& telemetry) {
    if (!connected) {
        connected_ = false;
        return Published::Nothing;
    }
    if (!connected_) {
        connected_ = true;
        backoff_.reset();
        askForStatus();  // report after every (re)connect
    }
    // 0: the event size is not known yet (Device OS answers it only once connected): wait.
    if (publisher.maxDataSize() == 0 || !bucket_.available(now)) {
        return Published::Nothing;
    }
    // The status report goes first: it is what gets a device without a token its token.
    if (statusDue(now)) {
        return sendStatus(now, publisher);
    }
    if (dataDue(now)) {
        return sendData(now, publisher, telemetry);
    }
    return Published::Nothing;
}

Published Controller::sendStatus(uint32_t now, Publisher& publisher) {
    char data[kStatusDataCapacity];
    const size_t len = formatStatusData(data, sizeof(data), state_, fingerprint_, config_.firmwareVersion, synced_);
    statusLast_ = now;
    if (len == 0 || len > publisher.maxDataSize()) {
        // Cannot happen with a sane configuration; give up on this report rather than loop on it.
        ++counters_.oversize;
        statusPending_ = false;
        statusWait_ = hasToken() ? config_.heartbeatMs : backoff_.next(jitter_);
        return Published::Nothing;
    }
    bucket_.take(now);
    if (!publisher.publish(config_.statusEvent, data)) {
        ++counters_.publishFailures;
        statusPending_ = true;
        statusFailed_ = true;
        return Published::Nothing;
    }
    ++counters_.statusSent;
    statusPending_ = false;
    statusFailed_ = false;
    statusWait_ = hasToken() ? config_.heartbeatMs : backoff_.next(jitter_);
    return Published::Status;
}

Published Controller::sendData(uint32_t now, Publisher& publisher, Telemetry& telemetry) {
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
        return Published::Nothing;
    }
    bucket_.take(now);
    if (!publisher.publish(config_.dataEvent, payload_)) {
        ++counters_.publishFailures;
        dataPending_ = true;
        dataFailed_ = true;
        return Published::Nothing;
    }
    ++counters_.dataSent;
    dataPending_ = false;
    dataFailed_ = false;
    return Published::Data;
}

}  // namespace tokenflow
