// Tokenflow device firmware: the Blynk "Connect a Particle device" blueprint, with the Blynk AuthToken
// taken from the device's Cloud-to-Device Ledger. All decisions (token checks, what to publish and
// when, payload building, pacing) live in lib/tokenflow_core, which is unit-tested on a host; this file
// only connects it to Device OS.
#include "Particle.h"

#include <atomic>

#include "tokenflow_config.h"
#include "tokenflow_core.h"

SYSTEM_THREAD(ENABLED);
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
    return c;
}

tokenflow::Controller controller{controllerConfig()};
Ledger tokenLedger;
// Set by the Ledger's sync callback, handled in loop(): the Ledger is only ever read on the
// application thread, whichever thread Device OS runs the callback on.
std::atomic<bool> ledgerSynced(false);

// The blueprint's readings: uptime, a simulated sensor, and the LED state.
constexpr bool kLedOnD7 = (PLATFORM_ID == PLATFORM_BORON || PLATFORM_ID == PLATFORM_ARGON);
uint8_t ledState = LOW;
double simulatedSensor = 3.14159;
uint32_t sensorLast = 0;

class CloudPublisher : public tokenflow::Publisher {
public:
    bool publish(const char* event, const char* data) override {
        const bool ok = Particle.publish(event, data, PRIVATE);  // waits for the cloud's acknowledgement
        if (!ok) {
            Log.warn("Publishing %s failed", event);
        }
        return ok;
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

void readLedger(bool fromSync) {
    LedgerData data = tokenLedger.get();
    const bool synced = tokenLedger.lastSynced() != 0;
    if (data.has(TOKENFLOW_LEDGER_KEY)) {
        const String value = data.get(TOKENFLOW_LEDGER_KEY).toString();
        controller.ledgerRead(value.c_str(), synced, fromSync, millis());
    } else {
        controller.ledgerRead(nullptr, synced, fromSync, millis());
    }
    // Never log the token itself: its fingerprint identifies it.
    switch (controller.tokenState()) {
        case tokenflow::TokenState::Valid:
            Log.info("Ledger: token %s", controller.fingerprint());
            break;
        case tokenflow::TokenState::Invalid:
            Log.warn("Ledger: %s is not a Blynk AuthToken; not sending to Blynk", TOKENFLOW_LEDGER_KEY);
            break;
        case tokenflow::TokenState::None:
            Log.info("Ledger: no token yet");
            break;
    }
}

void onLedgerSync(Ledger, void*) { ledgerSynced = true; }

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
    if (kLedOnD7) {
        pinMode(D7, OUTPUT);
        digitalWrite(D7, LOW);
    }
    Log.info("Tokenflow firmware %s, Device OS %s, Blynk template %s (%s)", TOKENFLOW_FIRMWARE_VERSION,
             System.version().c_str(), BLYNK_TEMPLATE_ID, BLYNK_TEMPLATE_NAME);

    Particle.function("blynk_led", blynkLed);

    controller.begin(millis(), HAL_RNG_GetRandomNumber());
    tokenLedger = Particle.ledger(TOKENFLOW_LEDGER_NAME);
    tokenLedger.onSync(onLedgerSync);
    // A Cloud-to-Device Ledger is kept in flash: a device that already has its token uses it at once.
    readLedger(false);
}

void loop() {
    if (ledgerSynced.exchange(false)) {
        readLedger(true);
    }
    simulateSensor();
    controller.loop(millis(), Particle.connected(), publisher, telemetry);
    if (kLedOnD7) {
        digitalWrite(D7, ledState);
    }
}
