"""Caller-id pools (domain/caller_id.py): parsing, round robin and local presence, the per number stats."""

from __future__ import annotations

import pytest

from dialerd.domain.caller_id import CallerIdPool, CallerIdStat, choose, pool_stats, split_entries

NY, CHI, SF = "+12125550100", "+13125550100", "+14155550100"


def pool(*numbers: str) -> CallerIdPool:
    return CallerIdPool.parse(",".join(numbers))


def test_parse_trims_and_keeps_the_order() -> None:
    parsed = CallerIdPool.parse(f" {NY} ,{CHI},  {SF}")
    assert parsed.texts == (NY, CHI, SF) and str(parsed) == f"{NY},{CHI},{SF}"
    assert CallerIdPool.parse("").texts == () and CallerIdPool.parse("   ").texts == ()


def test_a_comma_inside_quotes_does_not_separate() -> None:
    parsed = CallerIdPool.parse(f'"Acme, Inc" <{NY}>,{CHI}')
    assert parsed.texts == (f'"Acme, Inc" <{NY}>', CHI)
    assert parsed.entries[0].country == "US" and parsed.entries[0].national == "2125550100"
    assert split_entries('a,"b,c",d') == ["a", '"b,c"', "d"]


@pytest.mark.parametrize(("text", "problem"), [
    (f"{NY},,{CHI}", "empty entry"),
    (f"{NY},", "empty entry"),
    (f"{NY},{NY}", f"entry {NY!r} is given twice"),
    (f"{NY},+1312;555", "entry '+1312;555' must be"),
    (f"{NY},{'9' * 81}", "must be at most 80"),
])
def test_bad_entries_are_refused_naming_the_entry(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        CallerIdPool.parse(text)
    assert problem in str(caught.value)


def test_stored_never_refuses() -> None:
    assert CallerIdPool.stored("a,,b").texts == ("a,,b",)
    assert CallerIdPool.stored(f"{NY},{CHI}").texts == (NY, CHI)


def test_round_robin_takes_the_numbers_in_turn() -> None:
    p = pool(NY, CHI, SF)
    assert [choose(p, "round_robin", "+12125550199", n) for n in range(7)] == [NY, CHI, SF, NY, CHI, SF, NY]


def test_an_empty_pool_chooses_none_and_a_single_number_is_always_it() -> None:
    assert choose(CallerIdPool(), "local_presence", "+12125550199", 3) is None
    one = pool(CHI)
    for strategy in ("round_robin", "local_presence"):
        assert {choose(one, strategy, n, i) for i, n in enumerate(["+12125550199", "+442079460000"])} == {CHI}


def test_local_presence_takes_the_area_code() -> None:
    p = pool(NY, CHI, SF)
    for counter in range(4):  # whatever the rotation's position
        assert choose(p, "local_presence", "+13125550177", counter) == CHI
        assert choose(p, "local_presence", "+14155550123", counter) == SF
        assert choose(p, "local_presence", "+12125550123", counter) == NY


def test_local_presence_takes_the_longest_shared_prefix() -> None:
    # 212-555 and 212-736 share the area code with the contact; 212-736 shares its exchange too.
    p = pool(NY, "+12127360100", SF)
    assert choose(p, "local_presence", "+12127369999", 0) == "+12127360100"
    assert choose(p, "local_presence", "+12125559999", 1) == NY
    # A prefix shorter than the area code still counts: 213 shares '21' with 212 only.
    assert choose(pool(NY, SF), "local_presence", "+12135550100", 1) == NY


def test_local_presence_rotates_among_equal_matches() -> None:
    p = pool(NY, "+12125550200", SF)
    assert [choose(p, "local_presence", "+12129990000", n) for n in range(4)] == [
        NY, "+12125550200", NY, "+12125550200"]


def test_another_country_falls_back_to_round_robin() -> None:
    p = pool(NY, CHI, SF)
    london = "+442079460123"
    assert [choose(p, "local_presence", london, n) for n in range(4)] == [NY, CHI, SF, NY]
    assert pool(NY, "+441134960000").entries[1].country == "GB"
    uk = pool("+441134960000", "+442079460000")
    assert choose(uk, "local_presence", "+12125550100", 1) == "+442079460000"  # round robin, turn 1


def test_entries_without_an_international_number_are_taken_round_robin_only() -> None:
    p = CallerIdPool.parse(f"2125550100,{SF}")
    assert p.entries[0].country == ""
    assert choose(p, "local_presence", "+12125550123", 0) == "2125550100"  # fallback, turn 0
    assert choose(p, "local_presence", "+12125550123", 1) == SF  # fallback, turn 1 (no entry shares '212')
    assert choose(p, "local_presence", "+14155550123", 0) == SF


def test_pool_stats_lists_the_pool_then_former_numbers() -> None:
    counts = [CallerIdStat("+19995550100", 2, 1, 0), CallerIdStat(CHI, 4, 1, 2)]
    stats = pool_stats(pool(NY, CHI), counts)
    assert [(s.caller_id, s.attempts, s.answered, s.rejected, s.answer_rate) for s in stats] == [
        (NY, 0, 0, 0, None), (CHI, 4, 1, 2, 0.25), ("+19995550100", 2, 1, 0, 0.5)]


def test_the_same_calling_code_is_not_the_same_country() -> None:
    # 418 (Quebec, CA) shares '41' with both 415 (US) and 416 (Toronto, CA): only the Canadian one counts.
    p = pool(SF, "+14165550100")
    assert p.entries[0].country == "US" and p.entries[1].country == "CA"
    for counter in range(3):
        assert choose(p, "local_presence", "+14185550123", counter) == "+14165550100"
        assert choose(p, "local_presence", "+14155559999", counter) == SF
