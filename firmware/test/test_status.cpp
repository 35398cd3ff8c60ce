#include <cstring>
#include <string>

#include "minitest.h"
#include "status.h"

using tokenflow::TokenState;

TEST(status_formats_each_state) {
    char out[tokenflow::kStatusDataCapacity];
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::Valid, "8ce128206841", "1.0.0", true) > 0);
    CHECK_STR(out, "v=1;token=8ce128206841;fw=1.0.0;synced=1");
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::None, "8ce128206841", "1.0.0", false) > 0);
    CHECK_STR(out, "v=1;token=none;fw=1.0.0;synced=0");
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::Invalid, nullptr, "1.0.0", true) > 0);
    CHECK_STR(out, "v=1;token=invalid;fw=1.0.0;synced=1");
}

TEST(status_refuses_a_valid_state_without_fingerprint) {
    char out[tokenflow::kStatusDataCapacity];
    CHECK_EQ(tokenflow::formatStatusData(out, sizeof(out), TokenState::Valid, nullptr, "1", true), 0u);
    CHECK_EQ(tokenflow::formatStatusData(out, sizeof(out), TokenState::Valid, "abc", "1", true), 0u);
    CHECK_STR(out, "");
}

TEST(status_firmware_version_cannot_break_the_format) {
    char out[tokenflow::kStatusDataCapacity];
    tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, "1.0;token=x\n", true);
    CHECK_STR(out, "v=1;token=none;fw=1.0_token_x_;synced=1");
    const std::string longVersion(100, '9');
    const size_t n = tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, longVersion.c_str(), true);
    CHECK_EQ(n, std::strlen("v=1;token=none;fw=;synced=1") + tokenflow::kMaxFirmwareVersionLength);
}

TEST(status_small_buffer_fails_without_overflow) {
    char out[20];
    std::memset(out, 'Z', sizeof(out));
    CHECK_EQ(tokenflow::formatStatusData(out, 10, TokenState::None, nullptr, "1.0.0", true), 0u);
    CHECK_STR(out, "");
    for (size_t i = 10; i < sizeof(out); ++i) CHECK(out[i] == 'Z');
}

TEST(status_reason_follows_synced_only_without_a_token) {
    char out[tokenflow::kStatusDataCapacity];
    using tokenflow::ClearReason;
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, "1.0.0", true,
                                      ClearReason::Revoked) > 0);
    CHECK_STR(out, "v=1;token=none;fw=1.0.0;synced=1;reason=revoked");
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, "1.0.0", false,
                                      ClearReason::Transferred) > 0);
    CHECK_STR(out, "v=1;token=none;fw=1.0.0;synced=0;reason=transferred");
    // No reason, or a token (valid or not) in the Ledger: the v=1 data of before, unchanged.
    tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, "1.0.0", true, ClearReason::None);
    CHECK_STR(out, "v=1;token=none;fw=1.0.0;synced=1");
    tokenflow::formatStatusData(out, sizeof(out), TokenState::Invalid, nullptr, "1.0.0", true, ClearReason::Revoked);
    CHECK_STR(out, "v=1;token=invalid;fw=1.0.0;synced=1");
    // The longest report fits the buffer the controller uses.
    const std::string longVersion(100, '9');
    CHECK(tokenflow::formatStatusData(out, sizeof(out), TokenState::None, nullptr, longVersion.c_str(), true,
                                      ClearReason::Transferred) > 0);
}
