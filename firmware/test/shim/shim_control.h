// Drives the host stand-in of Device OS (shim_device.cpp) from a test: the clock, the cloud connection,
// the Cloud-to-Device Ledger's content and syncs, cloud function calls; and records what the
// application did (publishes with their flags, log lines, pin writes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "Particle.h"

namespace shim {

struct Publish {
    uint32_t at;
    std::string name;
    std::string data;
    uint8_t flags;  // PublishFlags value: PRIVATE 0x01, NO_ACK 0x02, WITH_ACK 0x08
};

struct PinWrite {
    hal_pin_t pin;
    uint8_t value;
};

void setMillis(uint32_t now);
void setConnected(bool connected);
void setMaxEventDataSize(int size);
void setPublishResult(bool ok);  // what the next publishes return

// The device's copy of a Ledger: what Device OS would have in flash. `syncedAtMs`: lastSynced().
void setLedger(const char* name, const LedgerData& data, int64_t syncedAtMs);
// The cloud's change reaches the device: the copy is replaced and the onSync callbacks run (on the
// calling thread here; on a system thread on the device).
void syncLedger(const char* name, const LedgerData& data, int64_t syncedAtMs);
// A sync callback for a ledger the application did not ask for (must be ignored).
void syncForeignLedger();
bool ledgerRequested(const char* name);

int callFunction(const char* name, const char* arg);  // -2: not registered

const std::vector<Publish>& publishes();
std::vector<Publish> publishesNamed(const std::string& name);
const std::vector<std::string>& logLines();
const std::vector<PinWrite>& pinWrites();
bool pinIsOutput(hal_pin_t pin);

}  // namespace shim

// The application's entry points (src/main.cpp).
void setup();
void loop();
