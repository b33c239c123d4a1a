"""Tests for fsbridge.grid: free spots on the 20 px lattice."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.grid import GRID, Rect, free_spot, free_spots


def grown_overlaps(x: float, y: float, w: float, h: float, half: float, rect: Rect) -> bool:
    """Whether the card (x, y, w, h) grown by ``half`` shares interior with ``rect``."""
    return (
        x - half < rect.x + rect.width
        and rect.x < x + w + half
        and y - half < rect.y + rect.height
        and rect.y < y + h + half
    )


def naive_free_spot(
    occupied: list[Rect], width: int, height: int, gap: int, columns: int
) -> tuple[int, int]:
    """Reference: try every slot in row-major order against every rect."""
    cell_w = math.ceil((width + gap) / GRID) * GRID
    cell_h = math.ceil((height + gap) / GRID) * GRID
    slot = 0
    while True:
        x, y = (slot % columns) * cell_w, (slot // columns) * cell_h
        if not any(grown_overlaps(x, y, width, height, gap / 2, r) for r in occupied):
            return x, y
        slot += 1


def lattice_cards(count: int, width: int = 200, height: int = 100) -> list[Rect]:
    occupied: list[Rect] = []
    for _ in range(count):
        x, y = free_spot(occupied, width, height)
        occupied.append(Rect(x, y, width, height))
    return occupied


# Multiples of 1/4 keep the arithmetic exact, so touching edges are tested exactly.
quarters = st.integers(-4000, 16000).map(lambda n: n / 4)
sizes = st.integers(0, 2400).map(lambda n: n / 4)
rects = st.builds(Rect, quarters, quarters, sizes, sizes)


def test_empty_board_starts_at_origin() -> None:
    assert free_spot([], 200, 100) == (0, 0)


def test_fills_rows_left_to_right_then_down() -> None:
    spots = [(r.x, r.y) for r in lattice_cards(8)]
    # cells are (200 + 40) x (100 + 40), six per row
    assert spots == [
        (0, 0), (240, 0), (480, 0), (720, 0), (960, 0), (1200, 0), (0, 140), (240, 140),
    ]  # fmt: skip


def test_cell_sizes_round_up_to_the_grid() -> None:
    occupied = [Rect(0, 0, 201, 95)]
    assert free_spot(occupied, 201, 95) == (260, 0)  # 241 -> 260
    assert free_spot(occupied, 201, 95, columns=1) == (0, 140)  # 135 -> 140
    assert free_spot([Rect(0, 0, 10, 10)], 10, 10, gap=0) == (20, 0)  # at least one GRID


def test_touching_is_not_overlapping() -> None:
    # A rect that ends exactly where slot 0's grown rect starts leaves slot 0 free ...
    assert free_spot([Rect(-100, -100, 80, 80)], 200, 100) == (0, 0)
    # ... one that reaches one pixel into the clearance does not.
    assert free_spot([Rect(-100, -100, 81, 81)], 200, 100) == (240, 0)


def test_avoids_cards_off_the_lattice() -> None:
    user_card = Rect(250, 10, 300, 300)  # dragged by hand over slots 1 and 2
    assert free_spot([Rect(0, 0, 200, 100), user_card], 200, 100) == (720, 0)


def test_fills_holes_left_by_removed_cards_first() -> None:
    occupied = lattice_cards(20)
    removed = [occupied[13], occupied[4]]
    remaining = [r for r in occupied if r not in removed]
    first = free_spot(remaining, 200, 100)
    assert first == (occupied[4].x, occupied[4].y)
    remaining.append(Rect(*first, 200, 100))
    assert free_spot(remaining, 200, 100) == (occupied[13].x, occupied[13].y)


def test_huge_and_degenerate_rects() -> None:
    wall = Rect(-1e300, -10, 2e300, 1e6)  # covers every column for many rows
    x, y = free_spot([wall], 200, 100)
    assert x == 0 and y >= 1e6 - 10 and y % GRID == 0
    column_zero = Rect(0, 0, 10, math.inf)  # column 0 is never free
    assert free_spot([column_zero], 200, 100) == (240, 0)
    assert free_spot([Rect(math.nan, 0, 10, 10), Rect(0, math.inf, 1, 1)], 200, 100) == (0, 0)


def test_bad_arguments() -> None:
    for kwargs in ({"width": 0}, {"height": -1}, {"gap": -1}, {"columns": 0}):
        args = {"width": 200, "height": 100, **kwargs}
        with pytest.raises(ValueError):
            free_spot([], **args)


@settings(max_examples=300)
@given(
    st.lists(rects, max_size=30),
    st.integers(1, 400),
    st.integers(1, 300),
    st.integers(0, 80),
    st.integers(1, 8),
)
def test_first_free_slot_never_overlaps(
    occupied: list[Rect], width: int, height: int, gap: int, columns: int
) -> None:
    x, y = free_spot(occupied, width, height, gap, columns)
    assert isinstance(x, int) and isinstance(y, int)
    assert x % GRID == 0 and y % GRID == 0 and x >= 0 and y >= 0
    for rect in occupied:
        assert not grown_overlaps(x, y, width, height, gap / 2, rect)
    assert (x, y) == naive_free_spot(occupied, width, height, gap, columns)


@given(st.lists(rects, max_size=30), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order(occupied: list[Rect], rng: random.Random) -> None:
    expected = free_spot(occupied, 200, 100)
    shuffled = list(occupied)
    rng.shuffle(shuffled)
    assert free_spot(iter(shuffled), 200, 100) == expected
    assert free_spot(occupied, 200, 100) == expected


def test_ten_thousand_occupied_cards_still_give_a_free_spot() -> None:
    # Speed is measured in bench/, not here; this checks correctness at scale.
    rng = random.Random(7)
    scattered = [
        Rect(rng.uniform(-500, 2000), rng.uniform(-500, 200_000), rng.uniform(10, 400), 80)
        for _ in range(10_000)
    ]
    packed = [Rect((i % 6) * 240, (i // 6) * 140, 200, 100) for i in range(10_000)]
    for occupied in (scattered, packed):
        spot = free_spot(occupied, 200, 100)
        assert not any(grown_overlaps(*spot, 200, 100, 20, r) for r in occupied)
    assert free_spot(packed, 200, 100) == (960, 1666 * 140)


@given(
    occupied=st.lists(
        st.builds(
            Rect,
            st.integers(-300, 3000),
            st.integers(-300, 3000),
            st.integers(1, 900),
            st.integers(1, 900),
        ),
        max_size=30,
    ),
    count=st.integers(0, 40),
)
def test_free_spots_equals_placing_one_card_after_another(occupied: list[Rect], count: int) -> None:
    expected = []
    rects = list(occupied)
    for _ in range(count):
        spot = free_spot(rects, 400, 400)
        expected.append(spot)
        rects.append(Rect(spot[0], spot[1], 400, 400))
    assert free_spots(occupied, count, 400, 400) == expected
