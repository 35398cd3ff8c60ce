"""The lifecycle rules as tables of cases: items in, decision out (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tokenflow import rules
from tokenflow.model import FollowUp, ProductDevice, Refused, TokenRef

NOW = "2026-11-29T10:00:00.000Z"
A, B = "a" * 24, "b" * 24
T, X = "1" * 64, "2" * 64
IN_PRODUCT = ProductDevice(B, name="pump-b")


def device(device_id: str, state: str, token: str | None = None, **extra) -> dict:
    item = {"device_id": device_id, "state": state, "version": 3, **extra}
    if token:
        item.update(token_id=token, token_fp=token[:12], token_mask="tok…mask")
    return item


def token(state: str, holder: str | None = None) -> dict:
    item = {"pk": f"TOKEN#{T}", "state": state, "version": 7, "token_mask": "tok…mask", "token_fp": "fp"}
    if holder:
        item["device_id"] = holder
    return item


def states(plan) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    return {(w.kind, w.id): (w.state_before, w.state_after) for w in plan.writes}


# ---- transfer ---------------------------------------------------------------------------------------

TRANSFER_CASES = [
    # (old device, its token, new device, new's own token, product says) -> states of the writes
    pytest.param(
        device(A, "confirmed", T),
        token("confirmed", A),
        None,
        None,
        IN_PRODUCT,
        {
            ("device", A): ("confirmed", "clearing"),
            ("token", T): ("confirmed", "assigned"),
            ("device", B): (None, "pending"),
        },
        id="confirmed device to a replacement Tokenflow has not seen",
    ),
    pytest.param(
        device(A, "failed", T),
        token("assigned", A),
        device(B, "waiting"),
        None,
        IN_PRODUCT,
        {
            ("device", A): ("failed", "clearing"),
            ("token", T): ("assigned", "assigned"),
            ("device", B): ("waiting", "pending"),
        },
        id="failed device to a waiting replacement",
    ),
    pytest.param(
        device(A, "delivered", T),
        token("delivered", A),
        device(B, "confirmed", X),
        {**token("confirmed", B), "pk": f"TOKEN#{X}"},
        IN_PRODUCT,
        {
            ("device", A): ("delivered", "clearing"),
            ("token", T): ("delivered", "assigned"),
            ("token", X): ("confirmed", "released"),
            ("device", B): ("confirmed", "pending"),
        },
        id="replacement already served and confirmed: its token is released",
    ),
    pytest.param(
        device(A, "delivered", T),
        token("delivered", A),
        device(B, "pending", X),
        {**token("assigned", B), "pk": f"TOKEN#{X}"},
        IN_PRODUCT,
        {
            ("device", A): ("delivered", "clearing"),
            ("token", T): ("delivered", "assigned"),
            ("token", X): ("assigned", "available"),
            ("device", B): ("pending", "pending"),
        },
        id="replacement's token never reached a Ledger: back to stock",
    ),
    pytest.param(
        device(A, "pending", T),
        token("assigned", A),
        device(B, "clearing", clear_reason="transferred"),
        None,
        IN_PRODUCT,
        {
            ("device", A): ("pending", "clearing"),
            ("token", T): ("assigned", "assigned"),
            ("device", B): ("clearing", "pending"),
        },
        id="transfer back to a device still clearing",
    ),
    pytest.param(
        device(A, "confirmed", T),
        token("confirmed", A),
        device(B, "retired"),
        None,
        IN_PRODUCT,
        {
            ("device", A): ("confirmed", "clearing"),
            ("token", T): ("confirmed", "assigned"),
            ("device", B): ("retired", "pending"),
        },
        id="to a retired device",
    ),
]


@pytest.mark.parametrize(("old", "tok", "new", "own", "target", "expected"), TRANSFER_CASES)
def test_transfer_moves_token_and_devices_as_the_diagram_says(old, tok, new, own, target, expected):
    plan = rules.transfer(A, B, old, tok, new, own, target, NOW)
    assert states(plan) == expected
    assert plan.follow_ups == (FollowUp(B, "deliver"), FollowUp(A, "clear"))
    # every item the rule read is guarded by its version
    assert all(w.guard == "version" for w in plan.writes)
    moved = next(w for w in plan.writes if w.id == T)
    assert moved.values["device_id"] == B
    old_write = next(w for w in plan.writes if w.id == A)
    assert old_write.values["clear_reason"] == "transferred" and old_write.values["token_id"] is None


REFUSED_TRANSFERS = [
    (A, device(A, "confirmed", T), token("confirmed", A), None, "bad_request", "itself"),
    (B, device(A, "confirmed", T), token("confirmed", A), None, "not_found", "not in the Particle product"),
    (
        B,
        device(A, "confirmed", T),
        token("confirmed", A),
        ProductDevice(B, quarantined=True),
        "conflict",
        "quarantined",
    ),
    (
        B,
        device(A, "confirmed", T),
        token("confirmed", A),
        ProductDevice(B, denied=True),
        "conflict",
        "denied",
    ),
    (B, None, None, IN_PRODUCT, "not_found", "unknown"),
    (B, device(A, "waiting"), None, IN_PRODUCT, "conflict", "holds no token"),
    (B, device(A, "clearing"), None, IN_PRODUCT, "conflict", "holds no token"),
    (B, device(A, "retired"), None, IN_PRODUCT, "conflict", "holds no token"),
    (B, device(A, "confirmed", T), token("revoked", A), IN_PRODUCT, "conflict", "revoked"),
    (B, device(A, "confirmed", T), token("confirmed", B), IN_PRODUCT, "conflict", "not transferable"),
]


@pytest.mark.parametrize(("to", "old", "tok", "target", "kind", "words"), REFUSED_TRANSFERS)
def test_transfer_refusals_say_why(to, old, tok, target, kind, words):
    with pytest.raises(Refused) as refused:
        rules.transfer(A, to, old, tok, None, None, target, NOW)
    assert refused.value.kind == kind and words in str(refused.value)


def test_counters_follow_the_writes_of_a_transfer_into_a_served_replacement():
    plan = rules.transfer(
        A,
        B,
        device(A, "confirmed", T),
        token("confirmed", A),
        device(B, "delivered", X),
        {**token("delivered", B), "pk": f"TOKEN#{X}"},
        IN_PRODUCT,
        NOW,
    )
    assert plan.counter_deltas() == {
        "devices_confirmed": -1,
        "devices_clearing": 1,
        "tokens_confirmed": -1,
        "tokens_assigned": 1,
        "tokens_delivered": -1,
        "tokens_released": 1,
        "devices_delivered": -1,
        "devices_pending": 1,
    }


# ---- revoke -----------------------------------------------------------------------------------------

REVOKE_CASES = [
    # (token, holder) -> (writes' states, follow-ups, holder named in the answer)
    (token("available"), None, {("token", T): ("available", "revoked")}, (), None),
    (
        token("confirmed", A),
        device(A, "confirmed", T),
        {("token", T): ("confirmed", "revoked"), ("device", A): ("confirmed", "clearing")},
        (FollowUp(A, "clear"),),
        A,
    ),
    (
        token("assigned", A),
        device(A, "pending", T),
        {("token", T): ("assigned", "revoked"), ("device", A): ("pending", "clearing")},
        (FollowUp(A, "clear"),),
        A,
    ),
    # a token that names a device which no longer holds it: the device is only guarded
    (
        token("delivered", A),
        device(A, "waiting"),
        {("token", T): ("delivered", "revoked"), ("device", A): ("waiting", "waiting")},
        (),
        None,
    ),
    (token("released"), None, {("token", T): ("released", "revoked")}, (), None),
]


@pytest.mark.parametrize(("tok", "holder", "expected", "follow_ups", "named"), REVOKE_CASES)
def test_revoke_clears_the_holder_and_guards_what_it_read(tok, holder, expected, follow_ups, named):
    plan = rules.revoke(T, tok, holder, NOW)
    assert states(plan) == expected
    assert plan.follow_ups == follow_ups
    assert plan.outcome["device_id"] == named and plan.outcome["already"] is False
    assert [e.what for e in plan.events] == ["revoked"]


def test_revoking_a_revoked_token_changes_nothing():
    plan = rules.revoke(T, token("revoked", A), None, NOW)
    assert plan.writes == () and plan.outcome["already"] is True


def test_revoking_an_unknown_token_is_not_found():
    with pytest.raises(Refused) as refused:
        rules.revoke(T, None, None, NOW)
    assert refused.value.kind == "not_found"


# ---- clearing, claims, deliveries -----------------------------------------------------------------


@pytest.mark.parametrize(("reason", "after"), [("revoked", "waiting"), ("transferred", "retired")])
def test_a_cleared_ledger_ends_clearing_by_its_reason(reason, after):
    plan = rules.cleared(device(A, "clearing", clear_reason=reason), NOW)
    assert states(plan) == {("device", A): ("clearing", after)}


@pytest.mark.parametrize("state", ["waiting", "pending", "confirmed", "retired"])
def test_only_a_clearing_device_can_be_cleared(state):
    with pytest.raises(Refused):
        rules.cleared(device(A, state), NOW)


CLAIM_CASES = [
    (None, False, True),
    ("waiting", False, True),
    ("retired", False, False),
    ("retired", True, True),
    ("pending", True, False),
    ("clearing", True, False),
    ("confirmed", False, False),
]


@pytest.mark.parametrize(("seen", "manual", "allowed"), CLAIM_CASES)
def test_a_claim_needs_a_device_without_a_token(seen, manual, allowed):
    ref = TokenRef(T, "fp", "mask")
    if not allowed:
        with pytest.raises(Refused):
            rules.claim(A, seen, ref, {}, NOW, manual=manual)
        return
    plan = rules.claim(A, seen, ref, {"name": "pump", "color": "red"}, NOW, manual=manual)
    assert states(plan) == {("token", T): ("available", "assigned"), ("device", A): (seen, "pending")}
    # not read first: guarded by exact state and binding
    assert all(w.guard == "state" for w in plan.writes)
    assert next(w for w in plan.writes if w.kind == "device").values.get("name") == "pump"
    assert "color" not in next(w for w in plan.writes if w.kind == "device").values


@pytest.mark.parametrize(
    ("category", "count", "decision"),
    [
        ("auth", 1, "stop-batch"),
        ("unavailable", 1, "retry"),
        ("unavailable", 4, "retry"),
        ("unavailable", 5, "fail"),
        ("refused", 1, "fail"),
    ],
)
def test_ledger_failures_are_retried_only_when_retrying_can_help(category, count, decision):
    assert rules.ledger_failure(category, count, 5) == decision


@pytest.mark.parametrize("count", [1, 5])
def test_a_configuration_error_stops_the_batch_whatever_the_attempt(count):
    assert rules.ledger_failure("config", count, 5) == "stop-batch"


@pytest.mark.parametrize(
    ("status", "probe", "stack_wide"),
    [
        (401, None, True),  # the access token: every device alike
        (403, None, True),  # a missing scope on the product or its Ledger
        (404, 404, True),  # the Ledger's instance listing is missing too: the definition is gone
        (404, 403, True),
        (404, None, False),  # the Ledger answered: the 404 was this device's (left the product)
        (400, None, False),
        (429, None, False),
        (500, None, False),
        (None, None, False),  # a timeout or a dropped connection
    ],
)
def test_only_refusals_that_hold_for_every_device_are_configuration_errors(status, probe, stack_wide):
    reason = rules.configuration_error(status, ledger_probe_status=probe)
    assert (reason is not None) == stack_wide
    if reason:
        assert str(probe or status) in reason


@pytest.mark.parametrize(
    ("wait", "delay"),
    [
        (600, 600),  # a Retry-After past the budget: back to the queue for as long
        (0, 1),  # at least a second
        (0.2, 1),
        (12.5, 13),  # whole seconds, rounded up: never earlier than asked
        (99_999, 43_200),  # SQS's largest visibility timeout
    ],
)
def test_a_wait_that_outlives_the_invocation_becomes_the_message_visibility_delay(wait, delay):
    assert rules.visibility_delay(wait) == delay


def test_confirm_from_pending_records_the_delivery_it_never_saw():
    plan = rules.confirm(device(A, "pending", T), NOW)
    assert states(plan) == {("device", A): ("pending", "confirmed"), ("token", T): ("assigned", "confirmed")}
    assert all("delivered_at" in w.values for w in plan.writes)


def test_a_mismatch_demotes_a_confirmed_device_counts_it_and_asks_for_the_token_again():
    plan = rules.mismatch(device(A, "confirmed", T, mismatches=2), "ffffffffffff", NOW)
    assert states(plan) == {
        ("device", A): ("confirmed", "delivered"),
        ("token", T): ("confirmed", "delivered"),
    }
    assert plan.writes[0].values["mismatches"] == 3
    assert plan.follow_ups == (FollowUp(A, "deliver"),)


# ---- what a status report means ------------------------------------------------------------------


@dataclass
class Report:
    holds: str
    fingerprint: str | None = None
    synced: bool | None = True
    published_at: str | None = None

    @property
    def has_token(self) -> bool:
        return self.holds == "token"


MINE = Report("token", T[:12])
OTHER = Report("token", "ffffffffffff")
NONE = Report("none")
LATE = "2026-11-29T11:00:00.000Z"
EARLY = "2026-11-29T09:00:00.000Z"

REPORT_CASES = [
    (None, MINE, "unknown"),
    (device(A, "pending", T), MINE, "confirm"),
    (device(A, "failed", T), MINE, "confirm"),
    (device(A, "delivered", T), MINE, "confirm"),
    (device(A, "confirmed", T), MINE, "already-confirmed"),
    (device(A, "confirmed", T), OTHER, "mismatch"),
    (device(A, "delivered", T), NONE, "mismatch"),
    (
        device(A, "confirmed", T, confirmed_at=NOW),
        Report("token", "ffffffffffff", published_at=EARLY),
        "stale",
    ),
    (
        device(A, "confirmed", T, confirmed_at=NOW),
        Report("token", "ffffffffffff", published_at=LATE),
        "mismatch",
    ),
    (device(A, "delivered", T), Report("none", synced=False), "awaiting-sync"),
    (device(A, "pending", T), NONE, "deliver"),
    (device(A, "failed", T), OTHER, "deliver"),
    (device(A, "waiting"), NONE, "serve-waiting"),
    (device(A, "waiting"), Report("none", synced=False), "serve-waiting"),
    (device(A, "waiting", cleared_at=NOW), Report("token", "ffffffffffff", published_at=LATE), "clear"),
    (device(A, "waiting", cleared_at=NOW), Report("token", "ffffffffffff", published_at=EARLY), "stale"),
    (device(A, "retired"), OTHER, "clear"),
    (device(A, "retired"), Report("token", "ffffffffffff", synced=False), "awaiting-sync"),
    (device(A, "retired"), NONE, "ignored"),
    (device(A, "clearing"), OTHER, "clear"),
    (device(A, "clearing"), NONE, "ignored"),
]


@pytest.mark.parametrize(("item", "report", "action"), REPORT_CASES)
def test_a_status_report_means(item, report, action):
    assert rules.classify_report(item, report) == action


NEEDS_WORK_CASES = [
    (None, 0, "new"),
    (device(A, "waiting"), 0, None),
    (device(A, "waiting"), 3, "waiting"),
    (device(A, "pending", T, updated_at=EARLY), 0, "stale"),
    (device(A, "pending", T, updated_at=LATE), 0, None),
    (device(A, "clearing", updated_at=EARLY), 0, "stale"),
    (device(A, "failed", T, retryable=True), 0, "retry"),
    (device(A, "failed", T, retryable=False), 0, None),
    (device(A, "confirmed", T), 5, None),
    (device(A, "retired"), 5, None),
]


@pytest.mark.parametrize(("item", "available", "reason"), NEEDS_WORK_CASES)
def test_a_sweep_queues_a_device_when(item, available, reason):
    assert rules.needs_work(item, available, NOW) == reason
