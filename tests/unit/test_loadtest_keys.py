"""The counters ``docnum loadtest --keys N`` spreads its requests over (the same bodies for
docnum and the lock design)."""
from __future__ import annotations

from datetime import date

from docnum.cli.loadtest import key_bodies


def _counter(body: dict) -> tuple[str, str, int]:
    return body["originator"], body["recipient"], date.fromisoformat(body["document_date"]).year


def test_64_keys_are_16_pairs_times_4_years() -> None:
    bodies = key_bodies("P1", 64, date(2026, 5, 20))
    counters = {_counter(b) for b in bodies}
    assert len(counters) == 64
    assert len({(o, r) for o, r, _ in counters}) == 16
    assert {year for _, _, year in counters} == {2023, 2024, 2025, 2026}
    assert len({o for o, _, _ in counters}) == 4 and len({r for _, r, _ in counters}) == 4
    # Consecutive requests go to different originator/recipient pairs.
    assert _counter(bodies[0])[:2] != _counter(bodies[1])[:2]
    assert all(b["project"] == "P1" and b["correspondence_type"] == "LETTER" for b in bodies)


def test_one_key_is_one_hot_counter_and_other_counts_stay_in_this_year() -> None:
    [hot] = key_bodies("P1", 1, date(2026, 5, 20))
    assert hot["document_date"] == "2026-05-20"
    bodies = key_bodies("P1", 3, date(2026, 5, 20))
    assert len({_counter(b) for b in bodies}) == 3
    assert {b["document_date"] for b in bodies} == {"2026-05-20"}


def test_a_leap_day_moves_to_the_28th_in_other_years() -> None:
    bodies = key_bodies("P1", 4, date(2028, 2, 29))
    assert sorted(b["document_date"] for b in bodies) == [
        "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"]
