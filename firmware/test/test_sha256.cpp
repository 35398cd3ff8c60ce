// SHA-256 against the FIPS 180-2/180-4 example messages and NIST's long-message vectors.
#include <cstring>
#include <string>

#include "minitest.h"
#include "sha256.h"

using tokenflow::Sha256;

namespace {

std::string hexDigest(const std::string& message) {
    uint8_t digest[Sha256::kDigestSize];
    tokenflow::sha256(message.data(), message.size(), digest);
    char hex[2 * Sha256::kDigestSize + 1];
    tokenflow::toHex(digest, sizeof(digest), hex);
    return hex;
}

}  // namespace

TEST(sha256_empty_message) {
    CHECK_STR(hexDigest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(sha256_fips_abc) {
    CHECK_STR(hexDigest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(sha256_fips_two_blocks_448_bits) {
    CHECK_STR(hexDigest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(sha256_fips_896_bits) {
    CHECK_STR(hexDigest("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                        "lmnopqrsmnopqrstnopqrstu"),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(sha256_fips_million_a_in_uneven_chunks) {
    Sha256 h;
    const std::string chunk(997, 'a');  // a prime length, so chunks straddle block boundaries
    size_t left = 1000000;
    while (left > 0) {
        const size_t n = left < chunk.size() ? left : chunk.size();
        h.update(chunk.data(), n);
        left -= n;
    }
    uint8_t digest[Sha256::kDigestSize];
    h.finish(digest);
    char hex[65];
    tokenflow::toHex(digest, sizeof(digest), hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(sha256_padding_edges_match_one_shot) {
    // Lengths around the 55/56/64-byte padding boundaries, hashed whole and byte by byte.
    for (size_t len : {54u, 55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u, 128u}) {
        const std::string message(len, 'x');
        Sha256 h;
        for (char c : message) h.update(&c, 1);
        uint8_t a[32];
        uint8_t b[32];
        h.finish(a);
        tokenflow::sha256(message.data(), message.size(), b);
        CHECK(std::memcmp(a, b, 32) == 0);
    }
    // 55 and 56 bytes of 'a' (known digests: the padding of the 56-byte message spills into a new block).
    CHECK_STR(hexDigest(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    CHECK_STR(hexDigest(std::string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
}

TEST(sha256_reset_allows_reuse) {
    Sha256 h;
    h.update("garbage", 7);
    h.reset();
    h.update("abc", 3);
    uint8_t digest[32];
    h.finish(digest);
    char hex[65];
    tokenflow::toHex(digest, 32, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
