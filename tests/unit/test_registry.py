"""The dataset registry parser: the shipped registry, and clear errors for bad entries."""

from pathlib import Path

import pytest

from ml.data.registry import FileFormat, RegistryError, load_registry, parse_registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
raw_dir: logs
datasets:
  tiny:
    events:
      path: logs/events.csv
      format: csv
      columns: {user_id: u, item_id: i, timestamp: t}
"""


def test_shipped_registry_describes_both_benchmark_datasets() -> None:
    registry = load_registry(PROJECT_ROOT / "datasets.yaml")
    assert registry.names == ["amazon-beauty", "movielens-100k"]
    assert registry.default_dataset == "amazon-beauty"
    beauty = registry.get("amazon-beauty")
    assert beauty.events.format is FileFormat.JSONL
    assert beauty.events.columns.event_id == "event_id"
    assert beauty.settings.k_core == 5 and beauty.settings.session_gap_minutes == 30
    movielens = registry.get("movielens-100k")
    assert movielens.events.columns.rating == "rating"
    assert movielens.items is not None and movielens.items.category_separator == "|"
    for name in registry.names:
        assert all(path.is_file() for path in registry.raw_files(name)), name


def test_minimal_entry_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    registry = parse_registry(MINIMAL, base_dir=tmp_path)
    assert registry.default_dataset == "tiny"
    assert registry.event_path("tiny") == (tmp_path / "logs/events.csv").resolve()
    assert registry.item_path("tiny") is None
    settings = registry.get("tiny").settings
    assert (settings.k_core, settings.session_gap_minutes, settings.min_rating) == (5, 30.0, None)


def test_fingerprint_changes_with_settings(tmp_path: Path) -> None:
    base = parse_registry(MINIMAL, base_dir=tmp_path).get("tiny").fingerprint()
    changed = parse_registry(MINIMAL + "    settings: {k_core: 10}\n", base_dir=tmp_path).get("tiny")
    assert changed.fingerprint() != base
    assert parse_registry(MINIMAL, base_dir=tmp_path).get("tiny").fingerprint() == base


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datasets: [", "not valid YAML"),
        ("nothing: here", "'datasets' mapping"),
        ("datasets: {}", "no datasets"),
        (MINIMAL.replace("tiny:", "Bad Name:"), "must match"),
        (MINIMAL.replace("format: csv", "format: xml"), "tiny"),
        (MINIMAL.replace("columns: {user_id: u, item_id: i, timestamp: t}", "columns: {user_id: u}"),
         "item_id"),
        (MINIMAL + "    unexpected: 1\n", "unexpected"),
        (MINIMAL + "    settings: {k_core: 0}\n", "k_core"),
        (MINIMAL + "    settings: {min_timestamp_s: 10, max_timestamp_s: 5}\n", "min_timestamp_s"),
        ("default_dataset: other\n" + MINIMAL, "default_dataset 'other'"),
        ("raw_dirs: logs\n" + MINIMAL, "unknown top-level registry keys"),
    ],
)
def test_bad_registries_fail_with_a_clear_message(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(text, base_dir=tmp_path)


def test_missing_registry_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "absent.yaml")


def test_unknown_dataset_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="tiny"):
        parse_registry(MINIMAL, base_dir=tmp_path).get("other")


def test_a_log_without_timestamps_is_accepted(tmp_path: Path) -> None:
    registry = parse_registry(MINIMAL.replace(", timestamp: t}", ", event_id: e}"), base_dir=tmp_path)
    columns = registry.get("tiny").events.columns
    assert columns.timestamp is None and columns.event_id == "e"


@pytest.mark.parametrize("path", ["/etc/passwd", "../../etc/passwd", "../outside.csv", "elsewhere/events.csv"])
def test_raw_paths_outside_the_raw_folder_are_refused(path: str, tmp_path: Path) -> None:
    text = MINIMAL.replace("path: logs/events.csv", f"path: {path}")
    with pytest.raises(RegistryError, match="outside .*allow_paths_outside_raw_dir"):
        parse_registry(text, base_dir=tmp_path)
    # An explicit setting lifts the rule.
    allowed = parse_registry("allow_paths_outside_raw_dir: true\n" + text, base_dir=tmp_path)
    assert allowed.event_path("tiny") == (tmp_path / path).resolve()


def test_a_symlink_out_of_the_raw_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "secret.csv").write_text("u,i,t\n")
    (tmp_path / "logs" / "events.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(RegistryError, match="outside"):
        parse_registry(MINIMAL, base_dir=tmp_path)


def test_the_raw_folder_itself_must_be_inside_the_registry_folder(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="raw_dir '..' must be a folder inside"):
        parse_registry(MINIMAL.replace("raw_dir: logs", "raw_dir: .."), base_dir=tmp_path / "project")


def test_missing_fields_are_named_with_what_the_pipeline_skips(tmp_path: Path) -> None:
    bare = parse_registry("""
datasets:
  bare:
    events: {path: data/raw/bare.csv, format: csv, columns: {user_id: u, item_id: i}}
""", base_dir=tmp_path).get("bare")
    assert (bare.has_timestamps, bare.has_ratings, bare.has_item_text) == (False, False, False)
    assert list(bare.skipped_for_missing_fields()) == ["timestamp", "rating", "item_text"]
    assert "no sessions" in bare.skipped_for_missing_fields()["timestamp"]
    shipped = load_registry(PROJECT_ROOT / "datasets.yaml")
    # Beauty has timestamps and titles but no ratings; movielens has all three.
    assert list(shipped.get("amazon-beauty").skipped_for_missing_fields()) == ["rating"]
    assert shipped.get("movielens-100k").skipped_for_missing_fields() == {}


def test_a_catalog_of_ids_only_has_no_item_text(tmp_path: Path) -> None:
    registry = parse_registry("""
datasets:
  ids:
    events: {path: data/raw/e.csv, format: csv, columns: {user_id: u, item_id: i}}
    items: {path: data/raw/i.csv, format: csv, columns: {item_id: i}}
  attributes:
    events: {path: data/raw/e.csv, format: csv, columns: {user_id: u, item_id: i}}
    items: {path: data/raw/i.csv, format: csv, columns: {item_id: i}, attribute_columns: [year]}
""", base_dir=tmp_path)
    assert not registry.get("ids").has_item_text and registry.get("attributes").has_item_text


def test_a_rating_filter_without_ratings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="min_rating is set but events.columns maps no rating"):
        parse_registry("""
datasets:
  unrated:
    events: {path: data/raw/e.csv, format: csv, columns: {user_id: u, item_id: i}}
    settings: {min_rating: 4}
""", base_dir=tmp_path)
