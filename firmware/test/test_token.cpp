#include <cstring>
#include <string>

#include "minitest.h"
#include "token.h"

using tokenflow::TokenState;

TEST(token_accepts_url_safe_base64_of_32) {
    CHECK(tokenflow::isValidToken("xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl"));
    CHECK(tokenflow::isValidToken("P-0ekUL3EjrEkE_UnIIzsIggqyQXYd0z"));
    CHECK(tokenflow::isValidToken("________________________________"));
}

TEST(token_rejects_other_values) {
    CHECK(!tokenflow::isValidToken(nullptr));
    CHECK(!tokenflow::isValidToken(""));
    CHECK(!tokenflow::isValidToken("xw7ITVneg1DifRRQuPGcA7fJvV8-FAV"));    // 31
    CHECK(!tokenflow::isValidToken("xw7ITVneg1DifRRQuPGcA7fJvV8-FAVlA"));  // 33
    CHECK(!tokenflow::isValidToken("xw7ITVneg1DifRRQuPGcA7fJvV8+FAVl"));   // standard base64
    CHECK(!tokenflow::isValidToken("sqr_yxzhvS6cuVTloK-7s1XIFb2ioAxh0Ofw"));  // a QR token
    const std::string longGarbage(5000, 'a');
    CHECK(!tokenflow::isValidToken(longGarbage.c_str()));
    // A NUL inside the counted length is not a token character.
    const char withNul[32] = {'a'};
    CHECK(!tokenflow::isValidToken(withNul, sizeof(withNul)));
}

TEST(token_classify) {
    CHECK(tokenflow::classifyToken(nullptr) == TokenState::None);
    CHECK(tokenflow::classifyToken("") == TokenState::None);
    CHECK(tokenflow::classifyToken("xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl") == TokenState::Valid);
    CHECK(tokenflow::classifyToken("not a token") == TokenState::Invalid);
    CHECK(tokenflow::classifyToken(" xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl") == TokenState::Invalid);
}

TEST(token_fingerprint_is_12_lowercase_hex) {
    char fp[13];
    tokenflow::fingerprint("xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl", 32, fp);
    CHECK_EQ(std::strlen(fp), 12u);
    for (const char* p = fp; *p; ++p) {
        CHECK((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    }
}

TEST(token_mask_hides_the_middle) {
    char masked[12];
    tokenflow::maskToken("xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl", masked);
    CHECK_STR(masked, "xw7I...FAVl");
    tokenflow::maskToken("short", masked);
    CHECK_STR(masked, "...");
}
