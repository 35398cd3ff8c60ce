#include "status.h"

#include <cstring>

namespace tokenflow {

namespace {

bool isPlainVersionChar(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_' || c == '+';
}

class Out {
public:
    Out(char* buf, size_t cap) : buf_(buf), cap_(cap), len_(0), ok_(buf != nullptr && cap > 0) {}
    void put(char c) {
        if (!ok_ || len_ + 1 >= cap_) {
            ok_ = false;
            return;
        }
        buf_[len_++] = c;
    }
    void put(const char* s) {
        while (*s != '\0' && ok_) {
            put(*s++);
        }
    }
    void fail() { ok_ = false; }
    size_t finish() {
        if (!ok_) {
            if (buf_ != nullptr && cap_ > 0) {
                buf_[0] = '\0';
            }
            return 0;
        }
        buf_[len_] = '\0';
        return len_;
    }

private:
    char* buf_;
    size_t cap_;
    size_t len_;
    bool ok_;
};

}  // namespace

size_t formatStatusData(char* out, size_t cap, TokenState state, const char* fingerprint,
                        const char* firmwareVersion, bool synced, ClearReason reason) {
    Out o(out, cap);
    if (state == TokenState::Valid && (fingerprint == nullptr || strlen(fingerprint) != kFingerprintLength)) {
        o.fail();  // a valid token needs its fingerprint: refuse rather than send a bad report
        return o.finish();
    }
    o.put("v=1;token=");
    switch (state) {
        case TokenState::Valid:
            o.put(fingerprint);
            break;
        case TokenState::Invalid:
            o.put("invalid");
            break;
        case TokenState::None:
            o.put("none");
            break;
    }
    o.put(";fw=");
    const char* fw = firmwareVersion ? firmwareVersion : "";
    for (size_t i = 0; fw[i] != '\0' && i < kMaxFirmwareVersionLength; ++i) {
        o.put(isPlainVersionChar(fw[i]) ? fw[i] : '_');
    }
    o.put(";synced=");
    o.put(synced ? '1' : '0');
    const char* why = state == TokenState::None ? clearReasonName(reason) : nullptr;
    if (why != nullptr) {
        o.put(";reason=");
        o.put(why);
    }
    return o.finish();
}

}  // namespace tokenflow
