"""The trim floor never passes any of its inputs: nothing below it is unarchived, untaken by a
consumer, undelivered to or unacknowledged by a group, or younger than the hot window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.archive.segments import format_id, id_key, successor
from engine.archive.trim import FloorInputs, GroupPosition, floor

ids = st.tuples(st.integers(0, 10_000), st.integers(0, 5)).map(lambda t: format_id(*t))
groups = st.builds(GroupPosition, ids, st.none() | ids)


@given(
    archived=ids,
    hot_cut=st.integers(0, 10_000),
    consumers=st.dictionaries(st.text(min_size=1, max_size=5), ids, max_size=4),
    group=st.dictionaries(st.text(min_size=1, max_size=5), groups, max_size=3),
    log=st.lists(ids, max_size=60, unique=True),
)
def test_nothing_a_reader_still_needs_is_below_the_floor(
    archived: str,
    hot_cut: int,
    consumers: dict[str, str],
    group: dict[str, GroupPosition],
    log: list[str],
) -> None:
    low = floor(FloorInputs(archived, hot_cut, consumers, group))
    trimmed = [i for i in log if id_key(i) < id_key(low.floor)]  # what XTRIM MINID removes
    for entry in trimmed:
        assert id_key(entry) <= id_key(archived)  # archived
        assert id_key(entry)[0] < hot_cut  # out of the hot window
        for taken in consumers.values():
            assert id_key(entry) <= id_key(taken)  # every consumer took it
        for g in group.values():
            assert id_key(entry) <= id_key(g.last_delivered)  # delivered
            if g.oldest_pending is not None:
                assert id_key(entry) < id_key(g.oldest_pending)  # and acknowledged


@given(archived=ids, hot_cut=st.integers(0, 10_000), taken=ids)
def test_the_floor_is_the_lowest_bound_and_names_it(
    archived: str, hot_cut: int, taken: str
) -> None:
    low = floor(FloorInputs(archived, hot_cut, {"projection v1": taken}))
    bounds = {
        "archive": successor(archived),
        "hot window": format_id(hot_cut, 0),
        "consumer projection v1": successor(taken),
    }
    assert id_key(low.floor) == min(id_key(b) for b in bounds.values())
    assert bounds[low.held_by] == low.floor
