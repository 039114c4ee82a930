"""The timing of leadership (policy.leadership): the deadline of a term, when to renew, when to step down, how long
a standby waits, and what the elections history calls a term."""
from __future__ import annotations

import itertools

import pytest

from comfyart.policy.leadership import (
    EPOCH_MOVED,
    RENEW_FAILED,
    RENEW_RETRY_S,
    Lead,
    RenewOutcome,
    StepDown,
    after_renew,
    election_reason,
    first_lead,
    leader_wait,
    margin_s,
    renew_timeout_s,
    standby_wait,
    still_valid,
    valid_until,
)


@pytest.mark.parametrize("lease_s, margin", [(0.5, 0.05), (1.0, 0.1), (2.0, 0.2), (5.0, 0.5), (10.0, 0.5),
                                             (300.0, 0.5)])
def test_the_margin_is_a_tenth_of_the_lease_at_most_half_a_second(lease_s, margin):
    assert margin_s(lease_s) == pytest.approx(margin)


@pytest.mark.parametrize("sent_at, lease_s, deadline", [(0.0, 2.0, 1.8), (100.0, 5.0, 104.5), (7.0, 0.5, 7.45),
                                                        (1.0, 30.0, 30.5)])
def test_a_term_is_valid_until_the_send_time_plus_the_lease_less_the_margin(sent_at, lease_s, deadline):
    assert valid_until(sent_at, lease_s) == pytest.approx(deadline)


@pytest.mark.parametrize("now, deadline, valid", [(0.0, 1.0, True), (0.999, 1.0, True), (1.0, 1.0, False),
                                                  (5.0, 1.0, False)])
def test_the_deadline_itself_is_already_invalid(now, deadline, valid):
    assert still_valid(now, deadline) is valid


@pytest.mark.parametrize("sent_at, now, expected", [
    (10.0, 10.01, Lead(11.8, 10.5)),
    (10.0, 11.79, Lead(11.8, 10.5)),
    (10.0, 11.8, StepDown(RENEW_FAILED)),  # the acquire came back too late to lead on it
    (10.0, 50.0, StepDown(RENEW_FAILED)),
])
def test_first_lead(sent_at, now, expected):
    got = first_lead(sent_at, now, lease_s=2.0, renew_interval_s=0.5)
    if isinstance(expected, Lead):
        assert isinstance(got, Lead)
        assert got.valid_until == pytest.approx(expected.valid_until)
        assert got.renew_at == pytest.approx(expected.renew_at)
    else:
        assert got == expected


@pytest.mark.parametrize("now, lead, expected", [
    (10.0, Lead(11.8, 10.5), 0.5),
    (10.5, Lead(11.8, 10.5), 0.0),
    (10.7, Lead(11.8, 10.5), 0.0),  # overdue: renew at once
    (11.0, Lead(11.8, 12.5), 0.8),  # never waits past the deadline
    (11.8, Lead(11.8, 10.5), StepDown(RENEW_FAILED)),
    (60.0, Lead(11.8, 10.5), StepDown(RENEW_FAILED)),  # woken after a freeze: steps down before any renew
])
def test_leader_wait(now, lead, expected):
    got = leader_wait(now, lead)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize("now, expected", [(10.0, 1.8), (11.0, 0.8), (11.8, 0.0), (13.0, 0.0)])
def test_a_renew_waits_no_longer_than_the_term_is_valid(now, expected):
    assert renew_timeout_s(now, Lead(11.8, 10.5)) == pytest.approx(expected)


LEAD = Lead(valid_until=11.8, renew_at=10.5)


@pytest.mark.parametrize("outcome, sent_at, now, expected", [
    (RenewOutcome.RENEWED, 10.5, 10.51, Lead(12.3, 11.0)),
    (RenewOutcome.RENEWED, 10.5, 11.9, Lead(12.3, 11.0)),  # past the old deadline, within the new one
    (RenewOutcome.RENEWED, 10.5, 12.3, StepDown(RENEW_FAILED)),  # answered after a freeze longer than the lease
    (RenewOutcome.REFUSED, 10.5, 10.51, StepDown(EPOCH_MOVED)),
    (RenewOutcome.REFUSED, 10.5, 30.0, StepDown(EPOCH_MOVED)),
    (RenewOutcome.UNANSWERED, 10.5, 10.6, Lead(11.8, 10.6 + RENEW_RETRY_S)),  # the deadline stays
    (RenewOutcome.UNANSWERED, 10.5, 11.7, Lead(11.8, 11.8)),  # a retry never later than the deadline
    (RenewOutcome.UNANSWERED, 10.5, 11.8, StepDown(RENEW_FAILED)),
])
def test_after_renew(outcome, sent_at, now, expected):
    got = after_renew(outcome, sent_at=sent_at, now=now, lead=LEAD, lease_s=2.0, renew_interval_s=0.5)
    if isinstance(expected, Lead):
        assert isinstance(got, Lead)
        assert got.valid_until == pytest.approx(expected.valid_until)
        assert got.renew_at == pytest.approx(expected.renew_at)
    else:
        assert got == expected


def test_a_retry_after_no_answer_comes_no_later_than_the_renew_interval():
    got = after_renew(RenewOutcome.UNANSWERED, sent_at=10.0, now=10.0, lead=Lead(20.0, 10.0), lease_s=11.0,
                      renew_interval_s=0.05)
    assert got == Lead(20.0, pytest.approx(10.05))


@pytest.mark.parametrize("outcome, sent_at, now", [
    (outcome, sent_at, now) for outcome, sent_at, now in itertools.product(
        list(RenewOutcome), [9.0, 10.0, 10.5, 11.0, 11.5], [10.0, 10.6, 11.0, 11.79, 11.8, 12.0, 12.5, 13.0, 40.0])
    if now >= sent_at])
def test_after_any_renew_the_term_never_outlasts_its_lease_nor_continues_past_its_deadline(outcome, sent_at, now):
    got = after_renew(outcome, sent_at=sent_at, now=now, lead=LEAD, lease_s=2.0, renew_interval_s=0.5)
    if isinstance(got, StepDown):
        assert got.reason == (EPOCH_MOVED if outcome is RenewOutcome.REFUSED else RENEW_FAILED)
        return
    assert outcome is not RenewOutcome.REFUSED
    assert now < got.valid_until <= max(LEAD.valid_until, sent_at + 2.0 - margin_s(2.0))
    assert got.renew_at <= max(got.valid_until, sent_at + 0.5)
    if outcome is RenewOutcome.UNANSWERED:
        assert got.valid_until == LEAD.valid_until  # no answer never extends the term


@pytest.mark.parametrize("now, last_try, woken, expected", [
    (10.0, None, False, 0.0),  # never tried: at once
    (10.0, 9.9, False, 0.15),
    (10.0, 9.75, False, 0.0),
    (10.0, 9.0, False, 0.0),
    (10.0, 9.9, True, 0.0),  # woken: at once
    (10.0, None, True, 0.0),
])
def test_standby_wait(now, last_try, woken, expected):
    assert standby_wait(now, last_try, poll_s=0.25, woken=woken) == pytest.approx(expected)


@pytest.mark.parametrize("terms_before, refused, reason", [(0, False, "start"), (0, True, "takeover"),
                                                           (3, True, "takeover"), (3, False, "again")])
def test_election_reason(terms_before, refused, reason):
    assert election_reason(terms_before=terms_before, refused_since_last_term=refused) == reason
