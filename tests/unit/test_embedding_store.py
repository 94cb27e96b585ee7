"""Versioned Parquet embeddings: round trip, content-named versions, the CURRENT pointer, validation."""

from pathlib import Path

import numpy as np
import pytest

from ml.data.embedding_store import embeddings_folder, read_embeddings, write_embeddings
from ml.data.versioned import NoCurrentVersion, VersionedFolder, sha256_file


def _vectors(seed: int, rows: int = 5, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def test_round_trip_keeps_ids_vectors_columns_and_manifest(tmp_path: Path) -> None:
    ids = ["b", "a", "c", "e", "d"]
    vectors = _vectors(0)
    folder = write_embeddings(tmp_path, "ds", "item_text", ids, vectors, "model-x", {"source": list("ppcpc")})
    stored = read_embeddings(tmp_path, "ds", "item_text")
    assert stored.ids == ids and stored.path == folder
    np.testing.assert_array_equal(stored.vectors, vectors)
    assert stored.columns == {"source": list("ppcpc")}
    manifest = stored.manifest
    assert (manifest["model_id"], manifest["dim"], manifest["count"], manifest["dataset"]) == ("model-x", 4, 5, "ds")
    assert manifest["sha256"] == sha256_file(folder / "embeddings.parquet")


def test_same_content_is_the_same_version_and_new_content_switches_current(tmp_path: Path) -> None:
    first = write_embeddings(tmp_path, "ds", "e", ["a", "b"], _vectors(1, 2), "m")
    manifest_before = (first / "manifest.json").read_text()
    again = write_embeddings(tmp_path, "ds", "e", ["a", "b"], _vectors(1, 2), "m")
    assert again == first and (first / "manifest.json").read_text() == manifest_before  # not rewritten
    changed = write_embeddings(tmp_path, "ds", "e", ["a", "b"], _vectors(2, 2), "m")
    assert changed != first
    store = embeddings_folder(tmp_path, "ds", "e")
    assert store.current() == changed.name and set(store.versions()) == {first.name, changed.name}
    np.testing.assert_array_equal(read_embeddings(tmp_path, "ds", "e", version=first.name).vectors, _vectors(1, 2))
    other_model = write_embeddings(tmp_path, "ds", "e", ["a", "b"], _vectors(2, 2), "another-model")
    assert other_model != changed
    assert not [p for p in (tmp_path / "ds" / "e").iterdir() if p.name.startswith(".")], "no staging leftovers"


@pytest.mark.parametrize(
    ("ids", "vectors", "columns", "message"),
    [
        (["a", "b"], np.zeros((3, 2)), None, "2 ids but vectors of shape"),
        (["a", "a"], np.zeros((2, 2)), None, "unique"),
        (["a", "b"], np.zeros((2, 2)), {"source": ["x"]}, "column 'source' has 1 values"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, ids: list[str], vectors: np.ndarray, columns: dict | None,
                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_embeddings(tmp_path, "ds", "e", ids, vectors, "m", columns)
    assert not (tmp_path / "ds" / "e").exists() or embeddings_folder(tmp_path, "ds", "e").versions() == []


def test_a_corrupted_embedding_file_is_refused_on_read(tmp_path: Path) -> None:
    folder = write_embeddings(tmp_path, "ds", "item_text", ["a", "b"], _vectors(3, 2), "m")
    data = bytearray((folder / "embeddings.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "embeddings.parquet").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted: embeddings.parquet"):
        read_embeddings(tmp_path, "ds", "item_text")


def test_reading_before_anything_is_published_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoCurrentVersion):
        read_embeddings(tmp_path, "ds", "nothing")


def test_failed_writer_leaves_no_version(tmp_path: Path) -> None:
    folder = VersionedFolder(tmp_path / "v")

    def broken(path: Path) -> None:
        (path / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        folder.write("v1", broken)
    assert folder.versions() == [] and not list((tmp_path / "v").iterdir())
    with pytest.raises(FileNotFoundError):
        folder.point_to("v1")
