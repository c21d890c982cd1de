from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.dispatch.states import (
    FINAL,
    TRANSITIONS,
    State,
    TransitionError,
    can_move,
    check_move,
    is_final,
    retry_delay,
)


def test_every_state_has_rules() -> None:
    assert set(TRANSITIONS) == set(State)


def test_final_states_go_nowhere_except_expired_correction() -> None:
    for state in FINAL:
        if state is State.EXPIRED:
            assert TRANSITIONS[state] == {State.DELIVERED, State.UNDELIVERED}
        else:
            assert TRANSITIONS[state] == frozenset()


def test_every_state_is_reachable_from_planned() -> None:
    seen, todo = {State.PLANNED}, [State.PLANNED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


@given(st.sampled_from(list(State)), st.sampled_from(list(State)))
def test_check_move_agrees_with_can_move(a: State, b: State) -> None:
    if can_move(a, b):
        assert check_move(a, b) is b
    else:
        with pytest.raises(TransitionError):
            check_move(a, b)


def test_examples() -> None:
    assert can_move("planned", "sending")
    assert can_move("sending", "planned")  # transient error: retry
    assert not can_move("delivered", "planned")
    assert not can_move("submitted", "sending")
    assert is_final("cancelled") and not is_final("submitted")


@given(st.integers(min_value=1, max_value=60))
def test_retry_delay_grows_and_is_capped(n: int) -> None:
    assert 0 < retry_delay(n) <= 300
    assert retry_delay(n + 1) >= retry_delay(n)


def test_retry_delay_rejects_zero() -> None:
    with pytest.raises(ValueError):
        retry_delay(0)


def test_lane_for() -> None:
    from hongyan.dispatch.states import Lane, lane_for

    assert lane_for("verification") is Lane.VERIFICATION
    assert lane_for("Marketing") is Lane.MARKETING
    with pytest.raises(ValueError):
        lane_for("spam")
