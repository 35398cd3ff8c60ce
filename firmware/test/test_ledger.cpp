// The rules that turn the Ledger's entries into "token", "no token (and why)" or "invalid".
#include <string>

#include "ledger.h"
#include "minitest.h"

using tokenflow::ClearReason;
using tokenflow::judgeLedger;
using tokenflow::LedgerValue;
using tokenflow::TokenState;

namespace {

const char* kToken = "xw7ITVneg1DifRRQuPGcA7fJvV8-FAVl";

LedgerValue of(LedgerValue::Kind kind, const char* token, const char* state) {
    LedgerValue v;
    v.kind = kind;
    v.token = token;
    v.state = state;
    return v;
}

}  // namespace

TEST(ledger_empty_missing_or_null_token_means_no_token) {
    CHECK(judgeLedger(LedgerValue::absent()).state == TokenState::None);
    CHECK(judgeLedger(LedgerValue::string("")).state == TokenState::None);
    CHECK(judgeLedger(LedgerValue::string(nullptr)).state == TokenState::None);
    CHECK(judgeLedger(of(LedgerValue::Kind::Null, nullptr, nullptr)).state == TokenState::None);
    CHECK(judgeLedger(LedgerValue::string("")).reason == ClearReason::None);
}

TEST(ledger_cleared_state_names_the_reason) {
    const auto revoked = judgeLedger(LedgerValue::string("", "revoked"));
    CHECK(revoked.state == TokenState::None);
    CHECK(revoked.reason == ClearReason::Revoked);
    const auto moved = judgeLedger(LedgerValue::string("", "transferred"));
    CHECK(moved.state == TokenState::None);
    CHECK(moved.reason == ClearReason::Transferred);
    // The reason counts whether the token entry is empty, null or missing.
    CHECK(judgeLedger(of(LedgerValue::Kind::Null, nullptr, "revoked")).reason == ClearReason::Revoked);
    CHECK(judgeLedger(of(LedgerValue::Kind::Absent, nullptr, "transferred")).reason == ClearReason::Transferred);
    // An unknown state names no reason; the names are exactly the contract's.
    CHECK(judgeLedger(LedgerValue::string("", "Revoked")).reason == ClearReason::None);
    CHECK(judgeLedger(LedgerValue::string("", "active")).reason == ClearReason::None);
    CHECK_STR(tokenflow::clearReasonName(ClearReason::Revoked), "revoked");
    CHECK_STR(tokenflow::clearReasonName(ClearReason::Transferred), "transferred");
    CHECK(tokenflow::clearReasonName(ClearReason::None) == nullptr);
}

TEST(ledger_non_string_value_is_invalid) {
    CHECK(judgeLedger(of(LedgerValue::Kind::Other, nullptr, "active")).state == TokenState::Invalid);
    CHECK(judgeLedger(of(LedgerValue::Kind::Other, nullptr, nullptr)).state == TokenState::Invalid);
    CHECK(judgeLedger(LedgerValue::string("not-a-token", "active")).state == TokenState::Invalid);
}

TEST(ledger_token_under_a_cleared_state_is_invalid_not_used) {
    CHECK(judgeLedger(LedgerValue::string(kToken, "revoked")).state == TokenState::Invalid);
    CHECK(judgeLedger(LedgerValue::string(kToken, "transferred")).state == TokenState::Invalid);
    CHECK(judgeLedger(LedgerValue::string(kToken, "revoked")).reason == ClearReason::None);
}

TEST(ledger_active_or_unknown_state_keeps_a_valid_token) {
    CHECK(judgeLedger(LedgerValue::string(kToken, "active")).state == TokenState::Valid);
    CHECK(judgeLedger(LedgerValue::string(kToken)).state == TokenState::Valid);
    CHECK(judgeLedger(LedgerValue::string(kToken, "suspended")).state == TokenState::Valid);
}
