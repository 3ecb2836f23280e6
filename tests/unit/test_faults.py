"""dialerd/faults.py: the failpoint spec (the actions themselves run in the fault-injection tests)."""

from __future__ import annotations

import pytest

from dialerd.faults import Failpoints


def test_a_point_may_stop_the_process_instead_of_killing_it() -> None:
    points = Failpoints("after_attempt:3:stop,after_originate:2")
    assert points._left == {"after_attempt": 3, "after_originate": 2}
    assert points._stop == {"after_attempt"}
    points.hit("after_attempt")
    points.hit("after_attempt")
    assert points._left["after_attempt"] == 1, "counted down to the hit that acts"
    points.hit("before_attempt")  # not armed: nothing


@pytest.mark.parametrize(("spec", "problem"), [
    ("after_attempt:1:pause", "unknown action 'pause'"),
    ("nowhere:1", "unknown failpoint 'nowhere'"),
])
def test_a_bad_spec_is_refused_naming_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Failpoints(spec)
