// The data of the tokenflow/status event: v=1;token=<fingerprint|none|invalid>;fw=<version>;synced=<0|1>
// followed by ;reason=<revoked|transferred> when the device has no token because the cloud cleared it
// (the contract parsed by tokenflow.device_status on the cloud side, which ignores keys it does not
// know). It never carries the token.
#pragma once

#include <cstddef>

#include "ledger.h"
#include "token.h"

namespace tokenflow {

constexpr size_t kMaxFirmwareVersionLength = 32;
constexpr size_t kStatusDataCapacity = 96;  // longest data is well under this

// Writes the status data into out (cap bytes) and returns its length, or 0 if it does not fit.
// fingerprint is used only when state is Valid. The firmware version is cut to 32 characters and any
// character that could break the key=value;... format (';', '=', control characters, ...) becomes '_'.
// `reason` is written only with TokenState::None (a token that is there has no clear reason).
size_t formatStatusData(char* out, size_t cap, TokenState state, const char* fingerprint,
                        const char* firmwareVersion, bool synced, ClearReason reason = ClearReason::None);

}  // namespace tokenflow
