// The Blynk payload writer: checked by parsing its output back, and at the size limit.
#include <cstring>
#include <string>

#include "json_reader.h"
#include "json_writer.h"
#include "minitest.h"

using tokenflow::JsonObjectWriter;

TEST(json_blueprint_shaped_payload) {
    char buf[256];
    JsonObjectWriter w(buf, sizeof(buf), 1024);
    w.addString("t", "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl")
        .addUnsigned("v14", 123456u)
        .addFixed("v15", 3.14159, 6)
        .addUnsigned("v16", 1)
        .addUnsigned("v17", 0);
    const size_t n = w.finish();
    CHECK_EQ(n, std::strlen(buf));
    CHECK_STR(buf, R"({"t":"xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl","v14":"123456","v15":"3.141590","v16":"1","v17":"0"})");
    const auto doc = testjson::parse(buf);
    CHECK_STR(doc["t"].string, "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl");
    CHECK_STR(doc["v15"].string, "3.141590");
}

TEST(json_escapes_quotes_backslashes_and_control_characters) {
    const std::string nasty = std::string("a\"b\\c/d\ne\rf\tg\bh\fi") + '\x01' + '\x1f' + '\x7f' + "\xc3\xa9";
    char buf[256];
    JsonObjectWriter w(buf, sizeof(buf), 1024);
    w.addString("k\"ey", nasty.c_str());
    CHECK(w.finish() > 0);
    CHECK_STR(buf, "{\"k\\\"ey\":\"a\\\"b\\\\c/d\\ne\\rf\\tg\\bh\\fi\\u0001\\u001f\\u007f\xc3\xa9\"}");
    const auto doc = testjson::parse(buf);  // throws (test crashes) if not valid JSON
    CHECK_STR(doc["k\"ey"].string, nasty);
    CHECK_EQ(tokenflow::jsonEscapedLength(nasty.data(), nasty.size()), std::strlen(buf) - std::strlen("{\"k\\\"ey\":\"\"}"));
}

TEST(json_signed_and_non_finite_numbers) {
    char buf[128];
    JsonObjectWriter w(buf, sizeof(buf), 1024);
    w.addSigned("a", -42).addFixed("b", 1.0 / 0.0, 2).addFixed("c", -0.125, 2);
    CHECK(w.finish() > 0);
    const auto doc = testjson::parse(buf);
    CHECK_STR(doc["a"].string, "-42");
    CHECK_STR(doc["b"].string, "");
    CHECK(doc["c"].string == "-0.12" || doc["c"].string == "-0.13");
}

TEST(json_exact_fit_and_one_byte_over) {
    // {"t":"<32>"} is 40 bytes.
    const char* token = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl";
    char buf[1025];
    {
        JsonObjectWriter w(buf, sizeof(buf), 40);
        w.addString("t", token);
        CHECK_EQ(w.finish(), 40u);
        CHECK_EQ(std::strlen(buf), 40u);
    }
    {
        JsonObjectWriter w(buf, sizeof(buf), 39);
        w.addString("t", token);
        CHECK_EQ(w.finish(), 0u);
        CHECK(!w.ok());
        CHECK_STR(buf, "");  // nothing half-written is left to publish
    }
}

TEST(json_never_writes_past_the_buffer) {
    char buf[64];
    std::memset(buf, 'Z', sizeof(buf));
    const std::string big(500, 'q');
    JsonObjectWriter w(buf, 32, 1024);  // the buffer, not maxLen, is the limit here
    w.addString("t", big.c_str());
    CHECK_EQ(w.finish(), 0u);
    for (size_t i = 32; i < sizeof(buf); ++i) {
        CHECK(buf[i] == 'Z');
    }
}

TEST(json_escaping_counts_against_the_limit) {
    // 20 quotes escape to 40 bytes: {"k":"<40>"} = 48 bytes.
    const std::string quotes(20, '"');
    char buf[128];
    JsonObjectWriter fits(buf, sizeof(buf), 48);
    fits.addString("k", quotes.c_str());
    CHECK_EQ(fits.finish(), 48u);
    JsonObjectWriter over(buf, sizeof(buf), 47);
    over.addString("k", quotes.c_str());
    CHECK_EQ(over.finish(), 0u);
}

TEST(json_tiny_limits_fail_cleanly) {
    char buf[8];
    JsonObjectWriter none(buf, sizeof(buf), 0);
    CHECK_EQ(none.finish(), 0u);
    JsonObjectWriter empty(buf, sizeof(buf), 2);
    CHECK_EQ(empty.finish(), 2u);
    CHECK_STR(buf, "{}");
    JsonObjectWriter nullValue(buf, sizeof(buf), 100);
    nullValue.addString("a", nullptr);
    CHECK_EQ(nullValue.finish(), 0u);
}
