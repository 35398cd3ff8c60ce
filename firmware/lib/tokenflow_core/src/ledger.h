// What the device's Cloud-to-Device Ledger says about its token, decided without Device OS.
//
// The cloud writes one of these into the device's `blynk-tokens-c2d` instance (Merge):
//   delivery        {"blynk_token": "<AuthToken>", "state": "active"}
//   revoke          {"blynk_token": "",            "state": "revoked"}
//   move (RMA)      {"blynk_token": "",            "state": "transferred"}
// A Cloud-to-Device Ledger is kept in flash and Particle documents no way for a deleted instance to
// reach the device, so the cloud clears a token by writing the cleared state, never by deleting.
#pragma once

#include "token.h"

namespace tokenflow {

// Why the Ledger holds no token, when the cloud said so.
enum class ClearReason {
    None,         // no reason given (never delivered, or a state this firmware does not know)
    Revoked,      // state "revoked": the token was deleted in Blynk
    Transferred,  // state "transferred": the token moved to another device (RMA)
};

// "revoked", "transferred", or nullptr for ClearReason::None: the value of `reason=` in the status data.
const char* clearReasonName(ClearReason reason);

// The Ledger's entries as main.cpp found them in LedgerData (Variant types, spark_wiring_variant.h).
struct LedgerValue {
    enum class Kind {
        Absent,  // no `blynk_token` entry (never written, or the Ledger not synced yet)
        Null,    // JSON null
        String,  // a string: `token` points at it (NUL-terminated, owned by the caller)
        Other,   // a number, bool, object or array: malformed
    };
    Kind kind = Kind::Absent;
    const char* token = nullptr;
    const char* state = nullptr;  // the `state` entry when it is a string, else nullptr

    static LedgerValue absent() { return LedgerValue{}; }
    static LedgerValue string(const char* token, const char* state = nullptr) {
        LedgerValue v;
        v.kind = token ? Kind::String : Kind::Absent;
        v.token = token;
        v.state = state;
        return v;
    }
};

struct LedgerVerdict {
    TokenState state = TokenState::None;
    ClearReason reason = ClearReason::None;  // only with TokenState::None
};

// The rules (tested in test/test_ledger.cpp and shared with the cloud through
// test/vectors/ledger_states.json):
// - no entry, null or "" -> None ("no token"), with the reason the `state` entry names, if any;
// - a non-string value (number, object, ...) -> Invalid;
// - a non-empty string under a cleared state (revoked/transferred) contradicts itself -> Invalid:
//   never sent to Blynk, reported as token=invalid so the cloud rewrites it;
// - otherwise the string is checked as an AuthToken: Valid or Invalid.
LedgerVerdict judgeLedger(const LedgerValue& value);

}  // namespace tokenflow
