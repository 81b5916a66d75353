"""The state machine table: terminal states stay, illegal pairs are refused."""

from hypothesis import given
from hypothesis import strategies as st

from oms import state


def test_terminal_states_never_change():
    for terminal in state.TERMINAL:
        for other in state.ALL - {terminal}:
            assert not state.transition_allowed(terminal, other)


def test_every_status_can_reach_an_end_except_risk_rejected_which_starts_there():
    for status in state.PENDING | state.WORKING:
        assert state.transition_allowed(status, state.CANCELLED) or status == state.CANCEL_PENDING
        assert state.transition_allowed(status, state.REJECTED)
    assert state.RISK_REJECTED not in {n for targets in state.TRANSITIONS.values() for n in targets}


def test_working_orders_do_not_go_back_to_pending():
    for status in state.WORKING:
        for pending in state.PENDING:
            assert not state.transition_allowed(status, pending), (status, pending)


def test_a_fill_implies_acceptance_and_a_full_fill_completes():
    assert state.status_after_fill(state.PUT_ORDER_REQ_RECEIVED, filled=1, quantity=10) == state.OPEN
    assert state.status_after_fill(state.OPEN, filled=10, quantity=10) == state.COMPLETE
    assert state.status_after_fill(state.CANCEL_PENDING, filled=10, quantity=10) == state.COMPLETE
    # A late fill of a cancelled order is money, but the order stays cancelled.
    assert state.status_after_fill(state.CANCELLED, filled=10, quantity=10) == state.CANCELLED
    assert not state.can_fill(state.RISK_REJECTED) and not state.can_fill(state.REJECTED)


@given(st.lists(st.sampled_from(sorted(state.ALL)), max_size=30))
def test_following_only_allowed_transitions_never_leaves_a_terminal_state(sequence):
    current = state.PUT_ORDER_REQ_RECEIVED
    reached_terminal = None
    for new in sequence:
        if state.transition_allowed(current, new):
            current = new
        if state.is_terminal(current) and reached_terminal is None:
            reached_terminal = current
    if reached_terminal is not None:
        assert current == reached_terminal
