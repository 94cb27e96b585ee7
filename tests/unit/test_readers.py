"""The chunked line reader: line numbers and text exact across chunk and batch boundaries."""

import gzip
import random
from pathlib import Path

import pytest

from ml.data import readers
from ml.data.readers import iter_line_batches


def _lines(path: Path, max_line_bytes: int = 1_000, batch_lines: int = 7) -> list[tuple[int, str, str | None]]:
    out = []
    for batch in iter_line_batches(path, max_line_bytes, batch_lines):
        assert len(batch.texts) <= batch_lines
        out += [(batch.first_line + i, text, batch.reasons.get(i)) for i, text in enumerate(batch.texts)]
    return out


@pytest.mark.parametrize("chunk_bytes", [1, 3, 16, 1 << 24])
@pytest.mark.parametrize("compressed", [False, True])
def test_every_line_once_whatever_the_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 chunk_bytes: int, compressed: bool) -> None:
    monkeypatch.setattr(readers, "CHUNK_BYTES", chunk_bytes)
    rng = random.Random(chunk_bytes)
    texts = ["".join(rng.choice("ab{}é\"") for _ in range(rng.randint(1, 30))) for _ in range(50)]
    data = "\r\n".join(texts[:25]).encode() + b"\r\n" + "\n".join(texts[25:]).encode()  # no final newline
    path = tmp_path / ("f.gz" if compressed else "f.txt")
    path.write_bytes(gzip.compress(data) if compressed else data)
    assert _lines(path) == [(number, text, None) for number, text in enumerate(texts, start=1)]


def test_unusable_lines_keep_their_number_and_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"ok\n\n  \nbad \xff byte\n" + b"x" * 20 + b"\nlast\n")
    assert _lines(path, max_line_bytes=10) == [
        (1, "ok", None),
        (2, "", "empty_line"),
        (3, "  ", "empty_line"),
        (4, "bad \\xff byte", "invalid_utf8"),
        (5, "x" * 20, "line_too_long"),
        (6, "last", None),
    ]


def test_an_empty_file_has_no_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"")
    assert _lines(path) == []
