"""Index builds and versioned publishing: manifest and checksums, verification against exact search, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from ml.data.versioned import NoCurrentVersion, sha256_file
from ml.index import publish as publish_module
from ml.index.build import IndexConfig, build_index, default_nlist
from ml.index.publish import PublishedIndex, publish_index, verify_index
from ml.index.recommend import load_current
from ml.index.store import IndexVerificationError, current_version, list_versions, rollback

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(rows: int, dim: int, seed: int, clusters: int = 20) -> np.ndarray:
    """Unit vectors scattered around random cluster centres (what item embeddings look like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, rows)] / np.sqrt(dim) + 0.1 * rng.standard_normal((rows, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{number}" for number in range(count)]


def _publish(root: Path, seed: int = 0, items: int = 200, users: int | None = 50, config: IndexConfig | None = None,
             dim: int = 16, **kwargs: object) -> PublishedIndex:
    item_vectors = clustered(items, dim, seed)
    user_ids = _ids("u", users) if users else None
    user_vectors = clustered(users, dim, seed + 100) if users else None
    metadata = {"model": "sasrec", "mlflow_run_id": f"run-{seed}", "metrics": {"ndcg@10": 0.1 + seed}}
    return publish_index(root, "ds", _ids("i", items), item_vectors, user_ids, user_vectors, metadata,
                         config or IndexConfig(), **kwargs)


def test_publish_writes_a_checksummed_version_and_makes_it_current(tmp_path: Path) -> None:
    published = _publish(tmp_path)
    folder = tmp_path / "ds" / published.version
    assert published.path == folder and current_version(tmp_path, "ds") == published.version
    expected_files = {"index.faiss", "item_ids.json", "item_vectors.npy", "user_ids.json", "user_vectors.npy"}
    assert {path.name for path in folder.iterdir()} == expected_files | {"manifest.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"] == {name: sha256_file(folder / name) for name in expected_files}
    assert (manifest["dataset"], manifest["dim"], manifest["item_count"], manifest["user_count"]) == ("ds", 16, 200, 50)
    assert manifest["model_run"] == {"model": "sasrec", "mlflow_run_id": "run-0"}
    assert manifest["metrics"] == {"ndcg@10": 0.1}
    assert manifest["index"]["kind"] == "flat_ip" and manifest["version"] == published.version
    assert json.loads((folder / "item_ids.json").read_text())[:2] == ["i0", "i1"]
    report = published.report
    assert (report.recall, report.min_recall, report.queries, report.query_source, report.k) == (1.0, 1.0, 50, "users", 10)
    assert report.files_checked == 5 and report.seconds >= 0


def test_two_publishes_keep_both_versions_and_rollback_walks_back(tmp_path: Path) -> None:
    with pytest.raises(NoCurrentVersion):
        current_version(tmp_path, "ds")
    first = _publish(tmp_path, seed=0)
    with pytest.raises(ValueError, match="no version of ds before"):
        rollback(tmp_path, "ds")
    second = _publish(tmp_path, seed=1)
    assert list_versions(tmp_path, "ds") == [first.version, second.version]  # timestamp names sort oldest first
    assert current_version(tmp_path, "ds") == second.version
    assert rollback(tmp_path, "ds") == first.version
    assert current_version(tmp_path, "ds") == first.version
    with pytest.raises(ValueError, match="no version of ds before"):
        rollback(tmp_path, "ds")
    assert rollback(tmp_path, "ds", to_version=second.version) == second.version
    with pytest.raises(ValueError, match="no version 'nope'"):
        rollback(tmp_path, "ds", to_version="nope")
    assert list_versions(tmp_path, "ds") == [first.version, second.version]
    assert not [path for path in (tmp_path / "ds").iterdir() if path.name.startswith(".")], "no staging leftovers"


def test_without_users_verification_queries_a_sample_of_items(tmp_path: Path) -> None:
    published = _publish(tmp_path, users=None, verify_users=30)
    assert (published.report.query_source, published.report.queries, published.report.recall) == ("items", 30, 1.0)
    assert "user_ids.json" not in published.manifest["files"]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("index.faiss", "flip"),
        ("item_ids.json", "flip"),
        ("user_vectors.npy", "delete"),
        ("stray.txt", "add"),
    ],
)
def test_a_damaged_file_fails_verify_and_load_naming_the_file(tmp_path: Path, name: str, damage: str) -> None:
    published = _publish(tmp_path)
    path = published.path / name
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text("hello")
    with pytest.raises(IndexVerificationError, match=name) as failure:
        verify_index(published.path, sample_users=10)
    assert failure.value.file == name
    with pytest.raises(IndexVerificationError, match=name):
        load_current(tmp_path, "ds")


def test_rollback_refuses_a_corrupted_target(tmp_path: Path) -> None:
    first = _publish(tmp_path, seed=0)
    second = _publish(tmp_path, seed=1)
    (first.path / "item_vectors.npy").write_bytes(b"garbage")
    with pytest.raises(IndexVerificationError, match="item_vectors.npy"):
        rollback(tmp_path, "ds")
    assert current_version(tmp_path, "ds") == second.version


def test_an_index_that_disagrees_with_its_ids_is_not_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _publish(tmp_path, seed=0)

    def shuffled_build(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
        # The classic bug: index rows in a different order from item_ids.json.
        return build_index(np.random.default_rng(0).permutation(vectors), config)

    monkeypatch.setattr(publish_module, "build_index", shuffled_build)
    with pytest.raises(IndexVerificationError, match="recall@10") as failure:
        _publish(tmp_path, seed=1)
    assert failure.value.report is not None and failure.value.report.recall < 0.5
    assert current_version(tmp_path, "ds") == first.version
    assert list_versions(tmp_path, "ds") == [first.version]
    assert sorted(path.name for path in (tmp_path / "ds").iterdir()) == sorted(["CURRENT", first.version])


def test_an_approximate_index_below_min_recall_is_not_published(tmp_path: Path) -> None:
    first = _publish(tmp_path, seed=0)
    # PQ scores without exact re-ranking reach ~0.65 recall@10 here.
    crude = IndexConfig(kind="ivf_pq", ivf_pq_refine_factor=None, ivf_nprobe=4, min_recall=0.95)
    with pytest.raises(IndexVerificationError, match="below the required 0.95"):
        _publish(tmp_path, seed=1, items=2000, dim=32, users=200, config=crude)
    assert list_versions(tmp_path, "ds") == [first.version] and current_version(tmp_path, "ds") == first.version


@pytest.mark.parametrize("kind", ["hnsw", "ivf_pq"])
def test_approximate_kinds_build_and_verify_above_min_recall(tmp_path: Path, kind: str) -> None:
    published = _publish(tmp_path, items=2000, dim=32, users=200, config=IndexConfig(kind=kind))
    assert published.report.recall >= 0.9 and published.report.min_recall == 0.9
    index_config = published.manifest["index"]
    assert index_config["kind"] == kind
    if kind == "ivf_pq":
        assert index_config["ivf_nlist"] == default_nlist(2000) == 51  # resolved and recorded
    report = verify_index(published.path, sample_users=100, seed=3)  # reloaded from disk with its search params
    assert report.recall >= 0.9 and report.queries == 100


@pytest.mark.parametrize(
    ("vectors", "config", "message"),
    [
        (np.zeros((0, 4)), IndexConfig(), "non-empty"),
        (np.full((3, 4), np.nan), IndexConfig(), "NaN"),
        (np.zeros((300, 10)), IndexConfig(kind="ivf_pq"), "does not divide"),
        (np.zeros((100, 16)), IndexConfig(kind="ivf_pq"), "too few"),
    ],
)
def test_build_refuses_bad_input(vectors: np.ndarray, config: IndexConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(vectors, config)


def test_config_and_publish_inputs_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index kind"):
        IndexConfig(kind="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_recall"):
        IndexConfig(min_recall=1.5)
    vectors = clustered(5, 4, 0)
    with pytest.raises(ValueError, match="unique"):
        publish_index(tmp_path, "ds", ["a", "a", "b", "c", "d"], vectors, None, None, {}, IndexConfig())
    with pytest.raises(ValueError, match="both user_ids and user_vectors"):
        publish_index(tmp_path, "ds", _ids("i", 5), vectors, ["u"], None, {}, IndexConfig())
    with pytest.raises(ValueError, match="user vectors have dim 3"):
        publish_index(tmp_path, "ds", _ids("i", 5), vectors, ["u"], np.zeros((1, 3)), {}, IndexConfig())
    assert list_versions(tmp_path, "ds") == []


def test_user_histories_and_the_offset_flag_travel_with_the_version_and_are_checked(tmp_path: Path) -> None:
    histories = [[f"i{(user + step) % 200}" for step in range(3)] for user in range(50)]
    published = _publish(tmp_path, user_histories=histories, score_offset_column=True)
    loaded = load_current(tmp_path, "ds")
    assert loaded.user_histories == histories and loaded.seen_by("u7") == ["i7", "i8", "i9"]
    assert loaded.seen_by("nobody") == [] and published.manifest["score_offset_column"] is True
    with pytest.raises(ValueError, match="1 history item\\(s\\) are not indexed items: \\['nope'\\]"):
        _publish(tmp_path / "other", user_histories=[["nope"]] + histories[1:])
    with pytest.raises(ValueError, match="one history per user"):
        _publish(tmp_path / "other", user_histories=histories[:3])
    # A histories file that no longer names indexed items (and matches its checksum) is refused on read.
    folder = published.path
    (folder / "user_histories.json").write_text(json.dumps([["ghost"]] * 50) + "\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["user_histories.json"] = sha256_file(folder / "user_histories.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexVerificationError, match="must list 50 histories of indexed item ids"):
        load_current(tmp_path, "ds")
