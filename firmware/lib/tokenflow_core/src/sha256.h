// SHA-256 (FIPS 180-4), small and dependency-free: the device needs it only to fingerprint its token.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tokenflow {

class Sha256 {
public:
    static constexpr size_t kDigestSize = 32;

    Sha256() { reset(); }
    void reset();
    void update(const void* data, size_t len);
    // Writes the 32-byte digest; the object must be reset() before it is used again.
    void finish(uint8_t out[kDigestSize]);

private:
    void compress(const uint8_t block[64]);

    uint32_t state_[8];
    uint64_t length_;  // bytes hashed so far
    uint8_t buffer_[64];
    size_t used_;
};

// One-shot helpers.
void sha256(const void* data, size_t len, uint8_t out[Sha256::kDigestSize]);
// Writes 2*len lowercase hex characters and a terminating NUL into out (size >= 2*len + 1).
void toHex(const uint8_t* bytes, size_t len, char* out);

}  // namespace tokenflow
