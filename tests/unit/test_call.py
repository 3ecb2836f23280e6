"""The call model (``dialerd/domain/call.py``): the attempt's moves and the end-of-call decision."""

from __future__ import annotations

import itertools

import pytest

from dialerd.domain.call import IN_FLIGHT, MOVES, AttemptState, CallEventKind, can_move, sources, steps

S = AttemptState
K = CallEventKind

# Rows: the attempt's state; columns: the event's kind. Each cell: the moves the event makes, in order
# ("-" for none). Written here by hand from the semantics, not derived from MOVES.
STEPS_TABLE = """
             progress   answered              ended
dialing      -          originated,answered   originated,ended
originated   -          answered              ended
answered     -          -                     ended
ended        -          -                     -
not_dialled  -          -                     -
"""


def _parse(text: str) -> dict[tuple[AttemptState, CallEventKind], tuple[AttemptState, ...]]:
    header, *rows = [line.split() for line in text.strip().splitlines()]
    kinds = [K(k) for k in header]
    table = {}
    for state, *cells in rows:
        assert len(cells) == len(kinds)
        for kind, cell in zip(kinds, cells, strict=True):
            table[(S(state), kind)] = () if cell == "-" else tuple(S(x) for x in cell.split(","))
    return table


EXPECTED_STEPS = _parse(STEPS_TABLE)

# target -> sources, written out again by hand.
EXPECTED_MOVES = {
    S.DIALING: set(),
    S.ORIGINATED: {S.DIALING},
    S.ANSWERED: {S.DIALING, S.ORIGINATED},
    S.ENDED: {S.DIALING, S.ORIGINATED, S.ANSWERED},
    S.NOT_DIALLED: {S.DIALING},
}


def test_tables_cover_every_state_and_kind() -> None:
    assert set(EXPECTED_STEPS) == set(itertools.product(AttemptState, CallEventKind))
    assert set(MOVES) == set(AttemptState) == set(EXPECTED_MOVES)


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(AttemptState, CallEventKind)))
def test_every_state_against_every_event_kind(state: AttemptState, kind: CallEventKind) -> None:
    path = steps(state, kind)
    assert path == EXPECTED_STEPS[(state, kind)]
    # Every step is a move the table allows, from where the previous one left the attempt.
    at = state
    for target in path:
        assert can_move(at, target), (at, target)
        at = target


@pytest.mark.parametrize(("current", "target"), list(itertools.product(AttemptState, AttemptState)))
def test_moves_table(current: AttemptState, target: AttemptState) -> None:
    assert can_move(current, target) is (current in EXPECTED_MOVES[target])


def test_the_stored_guard_of_each_move() -> None:
    assert sources(S.ENDED) == ("dialing", "originated", "answered")
    assert sources(S.ORIGINATED) == ("dialing",)
    assert sources(S.ANSWERED) == ("dialing", "originated")
    assert sources(S.DIALING) == ()
    assert all(type(v) is str for v in sources(S.ENDED))  # plain strings for the SQL drivers


def test_in_flight_and_final_states() -> None:
    assert set(IN_FLIGHT) == {S.DIALING, S.ORIGINATED, S.ANSWERED}
    assert {s for s in AttemptState if s.final} == {S.ENDED, S.NOT_DIALLED}
    assert all(not MOVES[target] & {S.ENDED, S.NOT_DIALLED} for target in AttemptState)  # final is final
