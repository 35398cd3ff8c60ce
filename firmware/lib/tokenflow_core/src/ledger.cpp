#include "ledger.h"

#include <cstring>

namespace tokenflow {

namespace {

ClearReason reasonOf(const char* state) {
    if (state == nullptr) {
        return ClearReason::None;
    }
    if (std::strcmp(state, "revoked") == 0) {
        return ClearReason::Revoked;
    }
    if (std::strcmp(state, "transferred") == 0) {
        return ClearReason::Transferred;
    }
    return ClearReason::None;  // "active" or a state a newer cloud may add: no reason to report
}

}  // namespace

const char* clearReasonName(ClearReason reason) {
    switch (reason) {
        case ClearReason::Revoked:
            return "revoked";
        case ClearReason::Transferred:
            return "transferred";
        case ClearReason::None:
            break;
    }
    return nullptr;
}

LedgerVerdict judgeLedger(const LedgerValue& value) {
    LedgerVerdict verdict;
    const ClearReason reason = reasonOf(value.state);
    switch (value.kind) {
        case LedgerValue::Kind::Other:
            verdict.state = TokenState::Invalid;
            return verdict;
        case LedgerValue::Kind::Absent:
        case LedgerValue::Kind::Null:
            verdict.reason = reason;
            return verdict;
        case LedgerValue::Kind::String:
            break;
    }
    if (value.token == nullptr || value.token[0] == '\0') {
        verdict.reason = reason;
        return verdict;
    }
    if (reason != ClearReason::None) {
        verdict.state = TokenState::Invalid;  // a token under a cleared state: trust neither
        return verdict;
    }
    verdict.state = classifyToken(value.token);
    return verdict;
}

}  // namespace tokenflow
