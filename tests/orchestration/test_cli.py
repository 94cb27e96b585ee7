"""The main-job command line: runs a job for a partition and prints where the results are."""

import os
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from ml.data.sequences import load_sequences
from ml.index.publish import publish_index
from ml.index.store import current_version, list_versions
from ml.models.checkpoints import item_vectors, save_checkpoint, user_vectors
from ml.models.sasrec import SASRec, SASRecConfig
from orchestration.cli import main
from tests.processes import warehouse_locked_by_another_process


def test_run_prints_results_then_recommend_and_rollback_use_the_index(
    warehouse_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance, not the project's history
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "data"))
    assert main(["run", "--dataset", "movielens-100k", "--job", "data_layer_job"]) == 0
    out = capsys.readouterr().out
    assert f"results in the DuckDB warehouse {warehouse_path}" in out
    assert "  users: 943" in out and "  items: 1349" in out and "  interactions: 99287" in out
    assert "published index: none" in out

    # Publish two index versions of a (small, untrained) SASRec, as the publishing asset would.
    with duckdb.connect(os.environ["LLMREC_DUCKDB_PATH"], read_only=True) as con:
        data = load_sequences(con, "movielens-100k")
        titles = dict(con.execute("select item_id, title from marts.item_catalog where dataset = 'movielens-100k'")
                      .fetchall())
    torch.manual_seed(0)
    config = SASRecConfig(hidden_dim=8, n_layers=1, n_heads=1, max_len=20)
    checkpoint = save_checkpoint(tmp_path / "data" / "checkpoints", "movielens-100k", "sasrec",
                                 SASRec(data.n_items, config).eval(), data.item_ids, config, {})
    indexes = tmp_path / "data" / "indexes"
    for _ in range(2):
        publish_index(indexes, "movielens-100k", data.item_ids, item_vectors(checkpoint.model), data.user_ids,
                      user_vectors(checkpoint.model, data.train),
                      {"model": "sasrec", "checkpoint_version": checkpoint.version}, verify_users=50,
                      item_titles=[titles[item] for item in data.item_ids],
                      user_histories=[[data.item_ids[row - 1] for row in history] for history in data.train])
    first, second = list_versions(indexes, "movielens-100k")

    # Serving reads only the index version: it answers while another process holds the warehouse's write lock.
    with warehouse_locked_by_another_process(os.environ["LLMREC_DUCKDB_PATH"]):
        assert main(["recommend", "--dataset", "movielens-100k", "--user", data.user_ids[0], "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"top 5 for user {data.user_ids[0]} from index {second} (sasrec):" and len(lines) == 6
    # Each line: rank, item id, score and the title from the item catalog, published with the index.
    for rank, line in enumerate(lines[1:], start=1):
        position, item, _, title = line.split(maxsplit=3)
        assert position == f"{rank}." and title == titles[item]
    # What the user has seen (their published history) is left out, and the rest keeps the index's order.
    seen = {data.item_ids[row - 1] for row in data.train[0]}
    ranked = checkpoint.model.score([data.train[0]])[0, 1:].detach().numpy()
    ranked[data.train[0] - 1] = -np.inf
    assert [line.split()[1] for line in lines[1:]] == [data.item_ids[row] for row in np.argsort(-ranked)[:5]]
    assert not seen & {line.split()[1] for line in lines[1:]}

    history = data.item_ids[:3]
    assert main(["recommend", "--dataset", "movielens-100k", "--history", *history]) == 0
    lines = capsys.readouterr().out.splitlines()
    recommended = [line.split()[1] for line in lines[1:]]
    assert len(recommended) == 10 and not set(recommended) & set(history)
    # The query is the model's own user tower over the history: the top item matches exact scoring.
    scores = checkpoint.model.score([np.arange(1, 4)])[0, 1:].numpy()
    scores[:3] = -np.inf
    assert recommended[0] == data.item_ids[int(np.argmax(scores))]

    assert main(["rollback", "--dataset", "movielens-100k"]) == 0
    assert current_version(indexes, "movielens-100k") == first
    assert f"now at {first}" in capsys.readouterr().out


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["run", "--dataset", "no-such-dataset"])


def test_run_refuses_to_select_an_asset_the_job_does_not_have() -> None:
    with pytest.raises(SystemExit, match="not assets of data_layer_job"):
        main(["run", "--dataset", "movielens-100k", "--job", "data_layer_job", "--select", "blend_model"])


def test_a_run_config_file_is_laid_over_the_preset(tmp_path: Path) -> None:
    from orchestration.cli import load_run_config, merge_run_config

    preset = {"ops": {"sasrec_model": {"config": {"max_steps": 40_000, "batching": "users"}},
                      "learn_model": {"config": {"max_steps": 7000}}}}
    path = tmp_path / "run.yaml"
    path.write_text("ops:\n  sasrec_model:\n    config: {max_steps: 10, betas: [0.1]}\n"
                    "resources:\n  llm:\n    config: {max_new_tokens: 48}\n")
    merged = merge_run_config(preset, load_run_config(path))
    assert merged == {"ops": {"sasrec_model": {"config": {"max_steps": 10, "batching": "users", "betas": [0.1]}},
                              "learn_model": {"config": {"max_steps": 7000}}},
                      "resources": {"llm": {"config": {"max_new_tokens": 48}}}}
    assert preset["ops"]["sasrec_model"]["config"]["max_steps"] == 40_000  # the preset itself is untouched
    path.write_text("- not a mapping\n")
    with pytest.raises(SystemExit, match="expected a mapping"):
        load_run_config(path)
    with pytest.raises(SystemExit, match="missing.yaml"):
        load_run_config(tmp_path / "missing.yaml")
