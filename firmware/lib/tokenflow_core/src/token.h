// What a Blynk AuthToken looks like, and how the device names one without revealing it.
#pragma once

#include <cstddef>

namespace tokenflow {

constexpr size_t kTokenLength = 32;        // [A-Za-z0-9_-]{32}: 24 bytes of URL-safe base64
constexpr size_t kFingerprintLength = 12;  // first 12 hex characters of SHA-256(token)

// What the Ledger holds for the token key.
enum class TokenState {
    None,     // no key, or an empty value: the device has no token (yet, or any more)
    Valid,    // an AuthToken
    Invalid,  // something else: never sent to Blynk, reported as token=invalid
};

bool isValidToken(const char* value, size_t len);
bool isValidToken(const char* value);  // NUL-terminated; nullptr is not a token

// nullptr or "" -> None; an AuthToken -> Valid; anything else -> Invalid.
TokenState classifyToken(const char* value);

// Writes the 12-character fingerprint and a NUL into out (at least 13 bytes).
void fingerprint(const char* token, size_t len, char out[kFingerprintLength + 1]);

// The token as the cloud's logs may show it: "xw7I…FAVl" style, with "..." as the ellipsis.
// Writes at most 12 bytes including the NUL into out.
void maskToken(const char* token, char out[12]);

}  // namespace tokenflow
