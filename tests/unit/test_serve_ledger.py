"""What the Serve request router reports to Ripple: a send a full replica refused is no
task (it would teach Ripple that the fullest replica is the fastest)."""

from __future__ import annotations

from serve.request_router import SendLedger


def test_an_accepted_send_is_an_assignment_and_a_completion() -> None:
    ledger = SendLedger()
    ledger.sent("r1", "a1")
    ledger.accepted_send("r1", "q1")
    assert ledger.ended("r1", "a1", "q1") is True
    assert ledger.take() == (["a1"], [("a1", True, None)])
    assert ledger.take() == ([], [])


def test_a_refused_send_is_taken_back_before_it_is_reported() -> None:
    ledger = SendLedger()
    ledger.sent("r0", "a0")
    ledger.accepted_send("r0", "q0")  # replicas give verdicts here
    ledger.sent("r1", "a1")  # q1 refused by r1 ...
    assert ledger.ended("r1", "a1", "q1") is False
    ledger.sent("r2", "a2")  # ... and accepted by r2
    ledger.accepted_send("r2", "q1")
    assert ledger.ended("r2", "a2", "q1") is True
    assert ledger.take() == (["a0", "a2"], [("a2", True, None)])
    assert (ledger.refused, ledger.orphaned) == (1, 0)


def test_a_refusal_after_the_report_is_counted_not_completed() -> None:
    ledger = SendLedger()
    ledger.sent("r0", "a0")
    ledger.accepted_send("r0", "q0")
    ledger.sent("r1", "a1")
    ledger.take()  # reported before the verdict came
    assert ledger.ended("r1", "a1", "q1") is False
    assert ledger.take() == ([], [])
    assert (ledger.refused, ledger.orphaned) == (1, 1)


def test_sends_without_verdicts_end_as_completions() -> None:
    # Ray Client (no strict max_ongoing_requests) or before the first acceptance.
    ledger = SendLedger()
    ledger.sent("r1", "a1")
    assert ledger.ended("r1", "a1", "q1") is True
    ledger.sent("r0", "a0")
    ledger.accepted_send("r0", "q0")
    # Serve's broadcast and reservation paths: no send awaits a verdict at this replica.
    assert ledger.ended("r2", "a2", "q9") is True
    assert ledger.take()[1] == [("a1", True, None), ("a2", True, None)]


def test_accepted_sends_are_bounded() -> None:
    ledger = SendLedger(max_tracked=2)
    for i in range(3):
        ledger.sent("r", "a")
        ledger.accepted_send("r", f"q{i}")
    assert len(ledger.accepted) == 2
