"""Read plans: which chunks to read, and the changed-extents file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e3backup.core.errors import UsageError
from e3backup.engines.read_plan import chunks_touching, load_changed_extents

C = 100  # chunk size for the table: small numbers are easier to read


@pytest.mark.parametrize(
    ("extents", "size", "expected"),
    [
        ([], 1000, []),
        ([(0, 1)], 1000, [0]),
        ([(0, C)], 1000, [0]),
        ([(0, C + 1)], 1000, [0, 1]),
        ([(C - 1, 2)], 1000, [0, 1]),
        ([(C, C)], 1000, [1]),  # exactly one chunk, on its boundaries
        ([(C - 1, 1)], 1000, [0]),  # last byte of a chunk
        ([(C, 1)], 1000, [1]),  # first byte of the next
        ([(250, 500)], 1000, [2, 3, 4, 5, 6, 7]),
        ([(0, 1000)], 1000, list(range(10))),
        ([(0, 10**9)], 1000, list(range(10))),  # clipped at the disk end
        ([(500, 0)], 1000, []),  # zero length
        ([(500, -5)], 1000, []),  # negative length
        ([(1000, 10)], 1000, []),  # starts at the end
        ([(5000, 10)], 1000, []),  # beyond the end
        ([(990, 100)], 1000, [9]),
        ([(0, 50)], 50, [0]),  # disk smaller than one chunk
        ([(920, 10)], 950, [9]),  # partial last chunk
        ([(0, 10)], 0, []),  # empty disk
        ([(700, 10), (100, 10), (400, 10)], 1000, [1, 4, 7]),  # unsorted
        ([(0, 250), (150, 300)], 1000, [0, 1, 2, 3, 4]),  # overlapping
        ([(150, 300), (0, 250)], 1000, [0, 1, 2, 3, 4]),  # overlapping, unsorted
        ([(0, 1000), (300, 10)], 1000, list(range(10))),  # contained
        ([(10, 10), (20, 10), (30, 10)], 1000, [0]),  # many in one chunk
        ([(10, 10), (10, 10)], 1000, [0]),  # duplicates
        ([(199, 1), (200, 1)], 1000, [1, 2]),  # adjacent across a boundary
        ([(0, 0), (150, 0), (260, 1)], 1000, [2]),
        ([(5000, 10), (10, 10)], 1000, [0]),
    ],
)
def test_chunks_touching(extents: list[tuple[int, int]], size: int, expected: list[int]) -> None:
    assert list(chunks_touching(extents, C, size)) == expected


def test_chunks_touching_accepts_a_generator_and_is_lazy() -> None:
    extents = ((n * 1000, 1) for n in range(10**6))
    chunks = chunks_touching(extents, 64 * 1024, 10**9)
    assert next(iter(chunks)) == 0


def test_chunks_touching_large_disk() -> None:
    tib = 1 << 40
    chunk = 4 << 20
    assert list(chunks_touching([(tib - 1, 1)], chunk, tib)) == [tib // chunk - 1]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "changed.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", []),
        ("[[0, 65536]]", [(0, 65536)]),
        ("[[10, 0], [0, 5]]", [(10, 0), (0, 5)]),
        (" [ [1099511627776, 1] ]\n", [(1 << 40, 1)]),
    ],
)
def test_load_changed_extents(tmp_path: Path, text: str, expected: list[tuple[int, int]]) -> None:
    assert load_changed_extents(_file(tmp_path, text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[[0, 1]",
        "not json",
        "{}",
        '{"extents": [[0, 1]]}',
        '"[[0, 1]]"',
        "42",
        "null",
        "[[0]]",
        "[[0, 1, 2]]",
        "[[-1, 10]]",
        "[[0, -10]]",
        "[[0.0, 10]]",
        "[[0, 1.5]]",
        "[[true, 10]]",
        "[[0, false]]",
        '[["0", "10"]]',
        "[[0, null]]",
        "[0, 10]",
        '[{"offset": 0, "length": 1}]',
        "[[0, 1], [2]]",
        "[[0, NaN]]",
        "[[0, Infinity]]",
    ],
)
def test_load_changed_extents_rejects(tmp_path: Path, text: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_changed_extents(path)
    assert str(path) in str(info.value)


def test_load_changed_extents_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(UsageError) as info:
        load_changed_extents(path)
    assert str(path) in str(info.value)


def test_load_changed_extents_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe[[0, 1]]")
    with pytest.raises(UsageError) as info:
        load_changed_extents(path)
    assert str(path) in str(info.value)


def test_load_changed_extents_large_file(tmp_path: Path) -> None:
    extents = [[n * 65536, 4096] for n in range(20000)]
    path = _file(tmp_path, json.dumps(extents))
    assert load_changed_extents(path) == [tuple(e) for e in extents]
