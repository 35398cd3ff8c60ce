#include "json_writer.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace tokenflow {

namespace {

// The escape for one byte, or nullptr if it goes through as it is. Control characters have to be
// escaped; bytes >= 0x80 (UTF-8) may stay as they are.
const char* escapeFor(unsigned char c, char scratch[7]) {
    switch (c) {
        case '"':
            return "\\\"";
        case '\\':
            return "\\\\";
        case '\n':
            return "\\n";
        case '\r':
            return "\\r";
        case '\t':
            return "\\t";
        case '\b':
            return "\\b";
        case '\f':
            return "\\f";
        default:
            break;
    }
    if (c < 0x20 || c == 0x7f) {
        static const char kDigits[] = "0123456789abcdef";
        scratch[0] = '\\';
        scratch[1] = 'u';
        scratch[2] = '0';
        scratch[3] = '0';
        scratch[4] = kDigits[c >> 4];
        scratch[5] = kDigits[c & 0x0f];
        scratch[6] = '\0';
        return scratch;
    }
    return nullptr;
}

}  // namespace

size_t jsonEscapedLength(const char* value, size_t len) {
    size_t total = 0;
    char scratch[7];
    for (size_t i = 0; i < len; ++i) {
        const char* esc = escapeFor(static_cast<unsigned char>(value[i]), scratch);
        total += esc ? strlen(esc) : 1;
    }
    return total;
}

JsonObjectWriter::JsonObjectWriter(char* buf, size_t cap, size_t maxLen)
    : buf_(buf), limit_(0), len_(0), ok_(buf != nullptr && cap >= 3), first_(true), finished_(false) {
    if (ok_) {
        limit_ = (maxLen < cap - 1) ? maxLen : cap - 1;
        buf_[0] = '\0';
        ok_ = limit_ >= 2;  // room for "{}" at least
        put('{');
    }
}

void JsonObjectWriter::put(char c) {
    // Keep one byte for the closing brace so that finish() always has room once members fit.
    if (!ok_ || len_ + 1 > limit_ - 1) {
        ok_ = false;
        return;
    }
    buf_[len_++] = c;
}

void JsonObjectWriter::putRaw(const char* s, size_t len) {
    for (size_t i = 0; i < len && ok_; ++i) {
        put(s[i]);
    }
}

void JsonObjectWriter::putEscaped(const char* s, size_t len) {
    char scratch[7];
    for (size_t i = 0; i < len && ok_; ++i) {
        const char* esc = escapeFor(static_cast<unsigned char>(s[i]), scratch);
        if (esc) {
            putRaw(esc, strlen(esc));
        } else {
            put(s[i]);
        }
    }
}

void JsonObjectWriter::beginMember(const char* key) {
    if (!first_) {
        put(',');
    }
    first_ = false;
    put('"');
    putEscaped(key, strlen(key));
    put('"');
    put(':');
}

JsonObjectWriter& JsonObjectWriter::addString(const char* key, const char* value, size_t valueLen) {
    if (finished_ || key == nullptr || value == nullptr) {
        ok_ = false;
        return *this;
    }
    beginMember(key);
    put('"');
    putEscaped(value, valueLen);
    put('"');
    return *this;
}

JsonObjectWriter& JsonObjectWriter::addString(const char* key, const char* value) {
    return addString(key, value, value ? strlen(value) : 0);
}

JsonObjectWriter& JsonObjectWriter::addUnsigned(const char* key, uint32_t value) {
    char digits[11];
    snprintf(digits, sizeof(digits), "%lu", static_cast<unsigned long>(value));
    return addString(key, digits);
}

JsonObjectWriter& JsonObjectWriter::addSigned(const char* key, int32_t value) {
    char digits[12];
    snprintf(digits, sizeof(digits), "%ld", static_cast<long>(value));
    return addString(key, digits);
}

JsonObjectWriter& JsonObjectWriter::addFixed(const char* key, double value, unsigned decimals) {
    // NaN and infinities have no JSON spelling; Blynk would reject them anyway.
    if (!std::isfinite(value)) {
        return addString(key, "");
    }
    if (decimals > 9) {
        decimals = 9;
    }
    char text[48];
    const int n = snprintf(text, sizeof(text), "%.*f", static_cast<int>(decimals), value);
    if (n < 0 || static_cast<size_t>(n) >= sizeof(text)) {
        ok_ = false;
        return *this;
    }
    return addString(key, text);
}

size_t JsonObjectWriter::finish() {
    if (!ok_ || finished_) {
        if (buf_ != nullptr && !ok_) {
            buf_[0] = '\0';
        }
        return ok_ ? len_ : 0;
    }
    finished_ = true;
    buf_[len_++] = '}';  // room kept by put()
    buf_[len_] = '\0';
    return len_;
}

}  // namespace tokenflow
