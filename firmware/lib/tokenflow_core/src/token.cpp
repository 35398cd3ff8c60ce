#include "token.h"

#include <cstring>

#include "sha256.h"

namespace tokenflow {

namespace {

bool isTokenChar(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

}  // namespace

bool isValidToken(const char* value, size_t len) {
    if (value == nullptr || len != kTokenLength) {
        return false;
    }
    for (size_t i = 0; i < len; ++i) {
        if (!isTokenChar(value[i])) {
            return false;
        }
    }
    return true;
}

bool isValidToken(const char* value) {
    if (value == nullptr) {
        return false;
    }
    // Count at most one character past a token's length: anything longer is not a token.
    size_t len = 0;
    while (len <= kTokenLength && value[len] != '\0') {
        ++len;
    }
    return isValidToken(value, len);
}

TokenState classifyToken(const char* value) {
    if (value == nullptr || value[0] == '\0') {
        return TokenState::None;
    }
    return isValidToken(value) ? TokenState::Valid : TokenState::Invalid;
}

void fingerprint(const char* token, size_t len, char out[kFingerprintLength + 1]) {
    uint8_t digest[Sha256::kDigestSize];
    sha256(token, len, digest);
    toHex(digest, kFingerprintLength / 2, out);
}

void maskToken(const char* token, char out[12]) {
    if (!isValidToken(token)) {
        strcpy(out, "...");
        return;
    }
    memcpy(out, token, 4);
    memcpy(out + 4, "...", 3);
    memcpy(out + 7, token + kTokenLength - 4, 4);
    out[11] = '\0';
}

}  // namespace tokenflow
