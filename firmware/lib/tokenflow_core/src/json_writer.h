// A bounded writer for one flat JSON object of string values: the Blynk webhook payload
// {"t":"<token>","v14":"...",...}. It never writes past its buffer and fails as a whole when the
// object would exceed the size limit (Particle.maxEventDataSize()), so a truncated, invalid payload
// is never published.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tokenflow {

class JsonObjectWriter {
public:
    // buf holds cap bytes; the finished object (without the NUL) may be at most maxLen bytes,
    // and at most cap - 1.
    JsonObjectWriter(char* buf, size_t cap, size_t maxLen);

    JsonObjectWriter& addString(const char* key, const char* value);
    JsonObjectWriter& addString(const char* key, const char* value, size_t valueLen);
    // Numbers are sent as JSON strings, as in the Blynk blueprint: the webhook only substitutes them.
    JsonObjectWriter& addUnsigned(const char* key, uint32_t value);
    JsonObjectWriter& addSigned(const char* key, int32_t value);
    JsonObjectWriter& addFixed(const char* key, double value, unsigned decimals);

    // Closes the object. Returns its length, or 0 if it did not fit (the buffer then holds "").
    size_t finish();
    bool ok() const { return ok_; }

private:
    void put(char c);
    void putRaw(const char* s, size_t len);
    void putEscaped(const char* s, size_t len);
    void beginMember(const char* key);

    char* buf_;
    size_t limit_;  // maximum length of the object
    size_t len_;
    bool ok_;
    bool first_;
    bool finished_;
};

// Length of value once escaped as the inside of a JSON string.
size_t jsonEscapedLength(const char* value, size_t len);

}  // namespace tokenflow
