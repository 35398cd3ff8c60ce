// The vectors shared with the cloud side (tests/vectors/fingerprint.json, also checked by
// tests/unit/test_firmware_contract.py against tokenflow.tokens and tokenflow.device_status).
#include <string>

#include "json_reader.h"
#include "minitest.h"
#include "sha256.h"
#include "status.h"
#include "token.h"

namespace {

const testjson::Value& vectors() {
    static const testjson::Value doc = testjson::parseFile(minitest::vectorsPath());
    return doc;
}

}  // namespace

TEST(vectors_fingerprint_and_sha256) {
    const auto& list = vectors()["fingerprint"];
    CHECK(list.size() >= 4);
    bool sawDash = false;
    bool sawUnderscore = false;
    for (const auto& v : list.array) {
        const std::string& token = v["token"].string;
        CHECK(tokenflow::isValidToken(token.c_str()));
        uint8_t digest[32];
        tokenflow::sha256(token.data(), token.size(), digest);
        char hex[65];
        tokenflow::toHex(digest, 32, hex);
        CHECK_STR(hex, v["sha256"].string);
        char fp[tokenflow::kFingerprintLength + 1];
        tokenflow::fingerprint(token.data(), token.size(), fp);
        CHECK_STR(fp, v["fingerprint"].string);
        sawDash = sawDash || token.find('-') != std::string::npos;
        sawUnderscore = sawUnderscore || token.find('_') != std::string::npos;
    }
    CHECK(sawDash);
    CHECK(sawUnderscore);
}

TEST(vectors_token_validity) {
    const auto& list = vectors()["token_validity"];
    CHECK(list.size() >= 4);
    for (const auto& v : list.array) {
        const std::string& value = v["value"].string;
        const bool valid = v["valid"].boolean;
        if (tokenflow::isValidToken(value.c_str()) != valid) {
            minitest::fail(__FILE__, __LINE__, "validity differs for \"" + value + "\"");
        }
        CHECK(tokenflow::isValidToken(value.data(), value.size()) == valid);
    }
}

TEST(vectors_status_data) {
    const auto& list = vectors()["status_data"];
    CHECK(list.size() >= 3);
    for (const auto& v : list.array) {
        const std::string& token = v["token"].string;
        tokenflow::TokenState state = tokenflow::TokenState::Valid;
        if (token == "none") state = tokenflow::TokenState::None;
        if (token == "invalid") state = tokenflow::TokenState::Invalid;
        char data[tokenflow::kStatusDataCapacity];
        const size_t n = tokenflow::formatStatusData(data, sizeof(data), state, token.c_str(), v["fw"].string.c_str(),
                                                     v["synced"].boolean);
        CHECK(n > 0);
        CHECK_STR(data, v["data"].string);
    }
}
