// Tokenflow device firmware: the Blynk "Connect a Particle device" blueprint, with the Blynk AuthToken
// taken from the device's Cloud-to-Device Ledger. All decisions (token checks, cleared states, the
// first-sync gate, what to publish and when, payload building, pacing) live in lib/tokenflow_core,
// which is unit-tested on a host; this file only connects it to Device OS. `make test` also builds and
// runs this file against a host stand-in of Device OS (test/shim/) that declares the real signatures.
#include "Particle.h"

#include <atomic>

#include "tokenflow_config.h"
#include "tokenflow_core.h"
#include "tokenflow_platform.h"

// From Device OS 6.2 the application thread is always separate and SYSTEM_THREAD is deprecated;
// Particle's examples guard it like this so the same source builds on 6.1 and 6.2+.
#ifndef SYSTEM_VERSION_v620
SYSTEM_THREAD(ENABLED);
#endif
PRODUCT_VERSION(TOKENFLOW_PRODUCT_VERSION);

SerialLogHandler logHandler(LOG_LEVEL_INFO);

namespace {

tokenflow::ControllerConfig controllerConfig() {
    tokenflow::ControllerConfig c;
    c.firmwareVersion = TOKENFLOW_FIRMWARE_VERSION;
    c.statusEvent = TOKENFLOW_STATUS_EVENT;
    c.dataEvent = TOKENFLOW_BLYNK_EVENT;
    c.dataIntervalMs = TOKENFLOW_PUBLISH_INTERVAL_MS;
    c.statusFirstRetryMs = TOKENFLOW_STATUS_FIRST_RETRY_MS;
    c.statusMaxRetryMs = TOKENFLOW_STATUS_MAX_RETRY_MS;
    c.statusJitterPercent = TOKENFLOW_STATUS_JITTER_PERCENT;
    c.heartbeatMs = TOKENFLOW_STATUS_HEARTBEAT_MS;
    c.publishRetryMs = TOKENFLOW_PUBLISH_RETRY_MS;
    c.publishBurst = TOKENFLOW_PUBLISH_BURST;
    c.publishRefillMs = TOKENFLOW_PUBLISH_REFILL_MS;
    c.firstSyncGraceMs = TOKENFLOW_FIRST_SYNC_GRACE_MS;
    return c;
}

tokenflow::Controller controller{controllerConfig()};
Ledger tokenLedger;
// Set by the Ledger's sync callback, handled in loop(): the Ledger is only ever read on the
// application thread, whichever thread Device OS runs the callback on.
std::atomic<bool> ledgerSynced(false);

// The blueprint's readings: uptime, a simulated sensor, and the LED state.
uint8_t ledState = LOW;
double simulatedSensor = 3.14159;
uint32_t sensorLast = 0;

class CloudPublisher : public tokenflow::Publisher {
public:
    bool publish(const char* event, const char* data, tokenflow::Ack ack) override {
        // Particle.publish returns a Future<bool>; converting it to bool waits for the outcome
        // (spark_wiring_async.h). true means the Particle cloud acknowledged the event, nothing more:
        // not that a webhook ran or that Blynk or Tokenflow accepted anything. WITH_ACK makes Device OS
        // insist on that acknowledgement (retrying) for the events the design counts on.
        const PublishFlags flags = ack == tokenflow::Ack::Required ? (PRIVATE | WITH_ACK) : PublishFlags(PRIVATE);
        const bool accepted = Particle.publish(event, data, flags);
        if (!accepted) {
            Log.warn("Publishing %s failed", event);
        }
        return accepted;
    }
    size_t maxDataSize() override {
        const int size = Particle.maxEventDataSize();  // negative until the cloud connection is up
        return size > 0 ? static_cast<size_t>(size) : 0;
    }
};

class BlueprintTelemetry : public tokenflow::Telemetry {
public:
    void addFields(tokenflow::JsonObjectWriter& out) override {
        out.addUnsigned("v14", millis())
            .addFixed("v15", simulatedSensor, 6)
            .addUnsigned("v16", ledState)
            .addUnsigned("v17", ledState);
    }
};

CloudPublisher publisher;
BlueprintTelemetry telemetry;

void simulateSensor() {
    if (millis() - sensorLast < 20000) {
        return;
    }
    sensorLast = millis();
    simulatedSensor += random(-100, 101) / 10000.0;
    if (simulatedSensor < 0.0) {
        simulatedSensor = 0.0;
    } else if (simulatedSensor > 3.3) {
        simulatedSensor = 3.3;
    }
}

// Overwrites a String's characters in place, so the token does not linger in freed heap memory.
void wipe(String& s) {
    for (unsigned i = 0; i < s.length(); ++i) {
        s.setCharAt(i, '\0');
    }
}

void readLedger(bool fromSync) {
    // get() returns a copy of the data (spark_wiring_ledger.h); lastSynced() is 0 if never synced.
    LedgerData data = tokenLedger.get();
    const bool synced = tokenLedger.lastSynced() != 0;
    tokenflow::LedgerValue value;
    String state;
    if (data.has(TOKENFLOW_LEDGER_STATE_KEY)) {
        const Variant s = data.get(TOKENFLOW_LEDGER_STATE_KEY);
        if (s.isString()) {
            state = s.toString();
            value.state = state.c_str();
        }
    }
    Variant* token = nullptr;
    if (data.has(TOKENFLOW_LEDGER_KEY)) {
        // By reference (no further copy of the token), wiped below once the controller has its own.
        Variant& v = data[TOKENFLOW_LEDGER_KEY];
        if (v.isString()) {
            value.kind = tokenflow::LedgerValue::Kind::String;
            value.token = v.value<String>().c_str();
            token = &v;
        } else if (v.isNull()) {
            value.kind = tokenflow::LedgerValue::Kind::Null;
        } else {
            value.kind = tokenflow::LedgerValue::Kind::Other;  // a number, map, ...: malformed
        }
    }
    controller.ledgerRead(value, synced, fromSync, millis());
    if (token != nullptr) {
        wipe(token->value<String>());
    }
    // Never log the token itself: its fingerprint identifies it.
    switch (controller.tokenState()) {
        case tokenflow::TokenState::Valid:
            Log.info("Ledger: token %s%s", controller.fingerprint(),
                     controller.syncedSinceBoot() ? "" : " (flash copy, waiting for the first sync)");
            break;
        case tokenflow::TokenState::Invalid:
            Log.warn("Ledger: %s is not a Blynk AuthToken; not sending to Blynk", TOKENFLOW_LEDGER_KEY);
            break;
        case tokenflow::TokenState::None: {
            const char* reason = tokenflow::clearReasonName(controller.clearReason());
            if (reason != nullptr) {
                Log.info("Ledger: token cleared by the cloud (%s); not sending to Blynk", reason);
            } else {
                Log.info("Ledger: no token yet");
            }
            break;
        }
    }
}

// Ledger::OnSyncCallback: void (*)(Ledger ledger, void* arg) (spark_wiring_ledger.h).
void onLedgerSync(Ledger ledger, void*) {
    if (!ledger.isValid() || ledger != tokenLedger) {
        return;  // not the token Ledger: nothing to re-read
    }
    ledgerSynced = true;
}

// The blueprint's cloud function: switches the LED and sends the readings at once.
// Returns 1 (on), 0 (off) or -1 (anything else).
int blynkLed(String onOrOff) {
    int result = -1;
    if (onOrOff == "on" || onOrOff == "1") {
        ledState = HIGH;
        result = 1;
    } else if (onOrOff == "off" || onOrOff == "0") {
        ledState = LOW;
        result = 0;
    } else {
        Log.warn("blynk_led: unexpected argument");
        return result;
    }
    controller.requestData();
    return result;
}

}  // namespace

void setup() {
#ifdef TOKENFLOW_LED_PIN
    pinMode(TOKENFLOW_LED_PIN, OUTPUT);
    digitalWrite(TOKENFLOW_LED_PIN, LOW);
#endif
    Log.info("Tokenflow firmware %s, Device OS %s (%s), Blynk template %s (%s)", TOKENFLOW_FIRMWARE_VERSION,
             System.version().c_str(), TOKENFLOW_PLATFORM_NETWORK, BLYNK_TEMPLATE_ID, BLYNK_TEMPLATE_NAME);

    if (!Particle.function("blynk_led", blynkLed)) {
        Log.error("Registering blynk_led failed");
    }

    controller.begin(millis(), HAL_RNG_GetRandomNumber());
    tokenLedger = Particle.ledger(TOKENFLOW_LEDGER_NAME);
    if (!tokenLedger.isValid()) {
        // Without the Ledger the device can never get a token: it keeps reporting token=none.
        Log.error("Ledger %s is not available", TOKENFLOW_LEDGER_NAME);
    } else {
        const int error = tokenLedger.onSync(onLedgerSync);
        if (error != 0) {
            Log.error("Ledger %s: onSync failed (%d)", TOKENFLOW_LEDGER_NAME, error);
        }
    }
    // A Cloud-to-Device Ledger is kept in flash: read it at once. The controller reports it right away
    // but sends data only after the first sync (or the grace time): the copy may be stale.
    readLedger(false);
}

void loop() {
    if (ledgerSynced.exchange(false)) {
        readLedger(true);
    }
    simulateSensor();
    controller.loop(millis(), Particle.connected(), publisher, telemetry);
#ifdef TOKENFLOW_LED_PIN
    digitalWrite(TOKENFLOW_LED_PIN, ledState);
#endif
}
