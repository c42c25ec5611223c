"""TraceDataset validation, Parquet / npz round trips, atomic writes and load-time validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mechgym.traces.io as traces_io
from mechgym.errors import MechGymError, TraceDatasetError
from mechgym.traces import (
    SCHEMA_VERSION,
    TraceDataset,
    TraceMetadata,
    load_npz,
    load_traces,
    save_npz,
    save_traces,
)

ENV_ID = "mechgym/Congestion-v0"


def make_dataset(
    n_episodes: int = 4,
    n_rounds: int = 5,
    n_agents: int = 3,
    n_actions: int = 6,
    *,
    rewards: bool = True,
    seed: int = 0,
    **metadata: Any,
) -> TraceDataset:
    rng = np.random.default_rng(seed)
    shape = (n_episodes, n_rounds, n_agents)
    fields = {
        "env_id": ENV_ID,
        "env_kwargs": {"n_rounds": n_rounds},
        "learner": {"name": "logit_q", "params": {"alpha": 0.25, "beta": 3.0, "epsilon": 0.06, "q0": 0.0}},
        "seed": seed,
        "extra": {"note": "test", "values": [1, 2.5, None]},
        **metadata,
    }
    return TraceDataset(
        actions=rng.integers(0, n_actions, shape),
        rewards=rng.normal(size=shape).astype(np.float32) if rewards else None,
        metadata=TraceMetadata(n_agents=n_agents, n_actions=n_actions, **fields),
    )


def assert_identical(loaded: TraceDataset, original: TraceDataset) -> None:
    assert loaded == original
    assert loaded.metadata == original.metadata
    assert loaded.actions.dtype == original.actions.dtype
    np.testing.assert_array_equal(loaded.actions, original.actions)
    if original.rewards is None:
        assert loaded.rewards is None
    else:
        assert loaded.rewards is not None
        assert loaded.rewards.dtype == np.float32
        np.testing.assert_array_equal(loaded.rewards.view(np.uint32), original.rewards.view(np.uint32))


def write_table(table: pa.Table, path: Path, metadata: dict[str, Any] | None) -> Path:
    """Write a hand-made table with (or without) mechgym metadata."""
    if metadata is not None:
        table = table.replace_schema_metadata({b"mechgym": json.dumps(metadata).encode()})
    pq.write_table(table, path)
    return path


def metadata_dict(**changes: Any) -> dict[str, Any]:
    return {**make_dataset().metadata.to_dict(), **changes}


# -- dataset validation ------------------------------------------------------------------------
BAD_DATASETS = {
    "action-out-of-range": (
        lambda: TraceDataset(np.full((2, 3, 3), 6), TraceMetadata(3, 6)),
        r"actions must be integers in \[0, 6\); got 6 at episode 0, round 0, agent 0",
    ),
    "negative-action": (lambda: TraceDataset(np.full((2, 3, 3), -1), TraceMetadata(3, 6)), r"got -1"),
    "n-agents-mismatch": (
        lambda: TraceDataset(np.zeros((2, 3, 4), int), TraceMetadata(3, 6)),
        r"4 agents but the metadata says n_agents=3",
    ),
    "float-actions": (lambda: TraceDataset(np.zeros((2, 3, 3)), TraceMetadata(3, 6)), r"must be integers; got dtype"),
    "bool-actions": (lambda: TraceDataset(np.zeros((2, 3, 3), bool), TraceMetadata(3, 6)), r"must be integers"),
    "wrong-ndim": (lambda: TraceDataset(np.zeros((3, 3), int), TraceMetadata(3, 6)), r"shape \[episodes"),
    "empty": (lambda: TraceDataset(np.zeros((0, 3, 3), int), TraceMetadata(3, 6)), r"the dataset is empty"),
    "nan-reward": (
        lambda: TraceDataset(
            np.zeros((2, 3, 3), int),
            TraceMetadata(3, 6),
            rewards=np.where(np.arange(18).reshape(2, 3, 3) == 0, np.nan, 0.0),
        ),
        r"rewards must be finite; got nan at episode 0, round 0, agent 0",
    ),
    "reward-overflows-float32": (
        lambda: TraceDataset(np.zeros((1, 1, 3), int), TraceMetadata(3, 6), rewards=np.full((1, 1, 3), 1e300)),
        r"too large for float32",
    ),
    "complex-reward": (
        lambda: TraceDataset(np.zeros((1, 1, 3), int), TraceMetadata(3, 6), rewards=np.zeros((1, 1, 3), complex)),
        r"real numbers",
    ),
    "reward-shape": (
        lambda: TraceDataset(np.zeros((2, 3, 3), int), TraceMetadata(3, 6), rewards=np.zeros((2, 3))),
        r"rewards must have the actions' shape",
    ),
    "metadata-type": (
        lambda: TraceDataset(np.zeros((2, 3, 3), int), {"n_agents": 3}),  # type: ignore[arg-type]
        r"must be a TraceMetadata",
    ),
}


@pytest.mark.parametrize("build, message", BAD_DATASETS.values(), ids=BAD_DATASETS.keys())
def test_dataset_validation_errors(build: Any, message: str) -> None:
    with pytest.raises(TraceDatasetError, match=message):
        build()


def test_dataset_errors_are_value_errors() -> None:
    assert issubclass(TraceDatasetError, MechGymError)
    assert issubclass(TraceDatasetError, ValueError)


def test_dataset_normalises_dtypes() -> None:
    dataset = make_dataset()
    assert dataset.actions.dtype == np.int16
    assert dataset.rewards is not None and dataset.rewards.dtype == np.float32
    assert len(dataset) == 4 and dataset.n_rounds == 5 and dataset.n_agents == 3 and dataset.n_actions == 6


def test_split_keeps_episode_order() -> None:
    dataset = make_dataset(n_episodes=10)
    train, test = dataset.split(0.8)
    assert (len(train), len(test)) == (8, 2)
    np.testing.assert_array_equal(train.actions, dataset.actions[:8])
    np.testing.assert_array_equal(test.actions, dataset.actions[8:])
    assert test.rewards is not None and dataset.rewards is not None
    np.testing.assert_array_equal(test.rewards, dataset.rewards[8:])
    assert train.metadata == test.metadata == dataset.metadata


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.05, -0.5])
def test_split_rejects_empty_parts(fraction: float) -> None:
    with pytest.raises(TraceDatasetError, match="train_fraction"):
        make_dataset(n_episodes=10).split(fraction)


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("rewards", [True, False], ids=["rewards", "no-rewards"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str, rewards: bool) -> None:
    dataset = make_dataset(rewards=rewards)
    path = dataset.save(tmp_path / f"traces{suffix}")
    assert path == tmp_path / f"traces{suffix}"
    assert_identical(load_traces(path), dataset)
    assert_identical(TraceDataset.load(path, env_id=ENV_ID), dataset)


def test_explicit_functions_round_trip(tmp_path: Path) -> None:
    dataset = make_dataset()
    assert_identical(load_npz(save_npz(dataset, tmp_path / "a.npz")), dataset)
    # save_traces writes Parquet whatever the suffix; load_traces reads non-.npz paths as Parquet
    assert_identical(load_traces(save_traces(dataset, tmp_path / "a.traces")), dataset)


@pytest.mark.parametrize(
    "n_actions, stored", [(2, pa.int8()), (128, pa.int8()), (129, pa.int16()), (32768, pa.int16()), (32769, pa.int32())]
)
def test_actions_use_the_smallest_integer_type(tmp_path: Path, n_actions: int, stored: pa.DataType) -> None:
    actions = np.zeros((1, 2, 2), dtype=np.int64)
    actions[0, 1, 1] = n_actions - 1
    dataset = TraceDataset(actions=actions, metadata=TraceMetadata(2, n_actions))
    save_traces(dataset, tmp_path / "t.parquet")
    assert pq.read_schema(tmp_path / "t.parquet").field("actions").type == pa.list_(stored, 2)
    assert_identical(load_traces(tmp_path / "t.parquet"), dataset)
    assert_identical(load_npz(save_npz(dataset, tmp_path / "t.npz")), dataset)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(2, 5)),  # a game has >= 2 agents
    n_actions=st.sampled_from([2, 7, 128, 129, 40000]),
    with_rewards=st.booleans(),
    data=st.data(),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    shape: tuple[int, int, int],
    n_actions: int,
    with_rewards: bool,
    data: st.DataObject,
) -> None:
    dtypes: list[type[np.integer[Any]]] = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]
    input_dtype = data.draw(st.sampled_from(dtypes))
    high = min(n_actions - 1, np.iinfo(input_dtype).max)
    actions = data.draw(hnp.arrays(input_dtype, shape, elements=st.integers(0, high)))
    rewards = None
    if with_rewards:
        floats = st.floats(width=32, allow_nan=False, allow_infinity=False)
        rewards = data.draw(hnp.arrays(np.float32, shape, elements=floats))
    dataset = TraceDataset(actions=actions, rewards=rewards, metadata=TraceMetadata(shape[2], n_actions, seed=3))
    directory = tmp_path_factory.mktemp("prop")
    for suffix in (".parquet", ".npz"):
        assert_identical(load_traces(dataset.save(directory / f"t{suffix}")), dataset)


def test_numpy_values_in_metadata_are_saved_as_json(tmp_path: Path) -> None:
    dataset = make_dataset(env_kwargs={"n_rounds": np.int64(5), "weights": np.array([0.5, 1.5])})
    loaded = load_traces(dataset.save(tmp_path / "t.parquet"))
    assert loaded.metadata.env_kwargs == {"n_rounds": 5, "weights": [0.5, 1.5]}
    assert type(loaded.metadata.env_kwargs["n_rounds"]) is int


@pytest.mark.parametrize("bad", [{"f": object()}, {"x": float("nan")}], ids=["object", "nan"])
def test_metadata_must_be_json(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(TraceDatasetError, match="JSON-serialisable"):
        make_dataset(extra=bad).save(tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(TraceDatasetError, match=r"\.parquet, \.npz"):
        make_dataset().save(tmp_path / "t.csv")


# -- atomic writes -----------------------------------------------------------------------------
def failing_writer(exception: BaseException) -> Any:
    def write(*args: Any, **kwargs: Any) -> None:
        file = next(arg for arg in args if hasattr(arg, "write"))  # write_table(table, file) / savez(file, ...)
        file.write(b"PAR1 half of a file")
        raise exception

    return write


@pytest.mark.parametrize("exception", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
@pytest.mark.parametrize(
    "suffix, module, function",
    [(".parquet", pq, "write_table"), (".npz", np, "savez_compressed")],
    ids=["parquet", "npz"],
)
def test_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exception: BaseException, suffix: str, module: Any, function: str
) -> None:
    old = make_dataset(seed=1)
    path = old.save(tmp_path / f"traces{suffix}")
    before = path.read_bytes()
    monkeypatch.setattr(module, function, failing_writer(exception))
    with pytest.raises(type(exception)):
        make_dataset(seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_identical(load_traces(path), old)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pq, "write_table", failing_writer(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_traces(make_dataset(), tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    path = make_dataset(seed=1).save(tmp_path / "t.parquet")
    new = make_dataset(seed=2, n_episodes=7)
    new.save(path)
    assert_identical(load_traces(path), new)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


# -- load-time validation ----------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceDatasetError, match="no trace file at"):
        load_traces(tmp_path / "nope.parquet")


def test_directory_is_not_a_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceDatasetError, match="is not a file"):
        load_traces(tmp_path)


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    path.touch()
    with pytest.raises(TraceDatasetError, match=r"is empty \(0 bytes\)"):
        load_traces(path)


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("keep", [0.5, 0.99, 8 / 1e9], ids=["half", "most", "8-bytes"])
def test_truncated_file(tmp_path: Path, suffix: str, keep: float) -> None:
    path = make_dataset(n_episodes=20).save(tmp_path / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: max(int(len(data) * keep), 8)])
    with pytest.raises(TraceDatasetError, match=r"truncated or corrupted") as info:
        load_traces(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_garbage_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(TraceDatasetError, match=r"truncated or corrupted"):
        load_traces(path)


def test_corrupted_parquet_data(tmp_path: Path) -> None:
    path = make_dataset(n_episodes=50, n_rounds=40).save(tmp_path / "t.parquet")
    data = bytearray(path.read_bytes())
    data[100:2000] = bytes(1900)  # zero the first data pages, keep header and footer
    path.write_bytes(bytes(data))
    with pytest.raises(TraceDatasetError, match=r"truncated or corrupted"):
        load_traces(path)


def test_corrupted_npz_member(tmp_path: Path) -> None:
    path = make_dataset(n_episodes=50, n_rounds=40).save(tmp_path / "t.npz")
    data = bytearray(path.read_bytes())
    data[200:1200] = bytes(1000)
    path.write_bytes(bytes(data))
    with pytest.raises(TraceDatasetError, match=r"truncated or corrupted"):
        load_traces(path)


def test_parquet_without_mechgym_metadata(tmp_path: Path) -> None:
    path = write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "other.parquet", metadata=None)
    with pytest.raises(TraceDatasetError, match="not a mechgym trace file"):
        load_traces(path)


def test_npz_without_mechgym_arrays(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(TraceDatasetError, match="not a mechgym trace file"):
        load_traces(path)


def test_newer_schema_version(tmp_path: Path) -> None:
    table = traces_io.to_arrow(make_dataset())
    path = write_table(table, tmp_path / "t.parquet", metadata_dict(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(TraceDatasetError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade mechgym"):
        load_traces(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_agents": "3"}, "n_agents must be a positive integer"),
        ({"schema_version": None}, "no valid schema_version"),
        ({"surprise": 1}, "unknown trace metadata fields"),
    ],
    ids=["n-agents-string", "no-version", "unknown-field"],
)
def test_malformed_metadata(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write_table(traces_io.to_arrow(make_dataset()), tmp_path / "t.parquet", metadata_dict(**change))
    with pytest.raises(TraceDatasetError, match=message):
        load_traces(path)


def test_metadata_not_json(tmp_path: Path) -> None:
    table = traces_io.to_arrow(make_dataset()).replace_schema_metadata({b"mechgym": b"{not json"})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TraceDatasetError, match="not valid JSON"):
        load_traces(tmp_path / "t.parquet")


def test_ragged_episodes(tmp_path: Path) -> None:
    table = traces_io.to_arrow(make_dataset(n_episodes=3, n_rounds=5))
    table = table.filter(pa.compute.invert(pa.compute.and_(
        pa.compute.equal(table["episode"], 1), pa.compute.equal(table["round"], 4)
    )))  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TraceDatasetError, match="ragged episodes: episode 1 has 4 rounds but others have 5"):
        load_traces(tmp_path / "t.parquet")


def test_duplicated_round(tmp_path: Path) -> None:
    table = traces_io.to_arrow(make_dataset(n_episodes=2, n_rounds=3))
    round_ = np.array([0, 1, 2, 0, 1, 1], dtype=np.int32)
    table = table.set_column(1, "round", pa.array(round_))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TraceDatasetError, match=r"episode 1 repeats round\(s\) \[1\] and lacks round\(s\) \[2\]"):
        load_traces(tmp_path / "t.parquet")


def test_missing_episode(tmp_path: Path) -> None:
    table = traces_io.to_arrow(make_dataset(n_episodes=3, n_rounds=2))
    table = table.filter(pa.compute.not_equal(table["episode"], 1))
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TraceDatasetError, match="episode 1 is missing"):
        load_traces(tmp_path / "t.parquet")


def test_rows_in_any_order(tmp_path: Path) -> None:
    dataset = make_dataset(n_episodes=4, n_rounds=6)
    table = traces_io.to_arrow(dataset)
    table = table.take(np.random.default_rng(0).permutation(table.num_rows))
    pq.write_table(table, tmp_path / "t.parquet")
    assert_identical(load_traces(tmp_path / "t.parquet"), dataset)


def hand_made_table(actions: list[list[int]], rewards: list[list[float]] | None = None) -> pa.Table:
    """One episode with a round per row."""
    columns = {
        "episode": pa.array([0] * len(actions), pa.int32()),
        "round": pa.array(range(len(actions)), pa.int32()),
        "actions": pa.array(actions, pa.list_(pa.int8(), 3)),
    }
    if rewards is not None:
        columns["rewards"] = pa.array(rewards, pa.list_(pa.float32(), 3))
    return pa.table(columns)


def test_nan_rewards_in_file(tmp_path: Path) -> None:
    table = hand_made_table([[0, 1, 2], [1, 1, 1]], [[0.0, 0.5, 1.0], [0.0, float("nan"), 1.0]])
    path = write_table(table, tmp_path / "t.parquet", metadata_dict())
    with pytest.raises(
        TraceDatasetError, match=r"t.parquet: rewards must be finite; got nan at episode 0, round 1, agent 1"
    ):
        load_traces(path)


def test_out_of_range_actions_in_file(tmp_path: Path) -> None:
    path = write_table(hand_made_table([[0, 1, 2], [1, 9, 1]]), tmp_path / "t.parquet", metadata_dict())
    with pytest.raises(
        TraceDatasetError, match=r"actions must be integers in \[0, 6\); got 9 at episode 0, round 1, agent 1"
    ):
        load_traces(path)


def test_wrong_list_size_in_file(tmp_path: Path) -> None:
    path = write_table(hand_made_table([[0, 1, 2]]), tmp_path / "t.parquet", metadata_dict(n_agents=4))
    with pytest.raises(TraceDatasetError, match=r"fixed_size_list\[4\]"):
        load_traces(path)


def test_null_actions_in_file(tmp_path: Path) -> None:
    table = hand_made_table([[0, 1, 2], [1, 1, 1]])
    table = table.set_column(2, "actions", pa.array([[0, 1, 2], [1, None, 1]], pa.list_(pa.int8(), 3)))
    path = write_table(table, tmp_path / "t.parquet", metadata_dict())
    with pytest.raises(TraceDatasetError, match="missing entries"):
        load_traces(path)


def test_missing_column(tmp_path: Path) -> None:
    table = hand_made_table([[0, 1, 2]]).drop_columns(["round"])
    path = write_table(table, tmp_path / "t.parquet", metadata_dict())
    with pytest.raises(TraceDatasetError, match="column 'round' is missing"):
        load_traces(path)


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_env_id_mismatch(tmp_path: Path, suffix: str) -> None:
    path = make_dataset().save(tmp_path / f"t{suffix}")
    with pytest.raises(
        TraceDatasetError,
        match="traces were recorded on mechgym/Congestion-v0 but mechgym/PublicGoods-v0 was asked for",
    ):
        load_traces(path, env_id="mechgym/PublicGoods-v0")
    assert load_traces(path, env_id=ENV_ID).metadata.env_id == ENV_ID


def test_env_id_mismatch_for_unregistered_env(tmp_path: Path) -> None:
    path = make_dataset(env_id=None).save(tmp_path / "t.parquet")
    with pytest.raises(TraceDatasetError, match="recorded on an unregistered environment"):
        load_traces(path, env_id=ENV_ID)


# -- interoperability --------------------------------------------------------------------------
def test_readable_by_plain_pyarrow(tmp_path: Path) -> None:
    dataset = make_dataset(n_episodes=2, n_rounds=3)
    path = dataset.save(tmp_path / "t.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["episode", "round", "actions", "rewards"]
    assert table.schema.field("episode").type == pa.int32()
    assert table.schema.field("rewards").type == pa.list_(pa.float32(), 3)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert table.num_rows == 6
    row = table.slice(4, 1).to_pylist()[0]
    assert (row["episode"], row["round"]) == (1, 1)
    assert row["actions"] == dataset.actions[1, 1].tolist()
    actions = np.stack(table["actions"].to_numpy(zero_copy_only=False)).reshape(2, 3, 3)
    np.testing.assert_array_equal(actions, dataset.actions)
    metadata = json.loads(table.schema.metadata[b"mechgym"])
    assert metadata["env_id"] == ENV_ID and metadata["schema_version"] == SCHEMA_VERSION


def test_readable_by_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path = make_dataset(n_episodes=2, n_rounds=3).save(tmp_path / "t.parquet")
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["episode", "round", "actions", "rewards"]
    assert len(frame) == 6


def test_npz_is_plain_numpy(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = dataset.save(tmp_path / "t.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["actions", "metadata", "rewards"]
        assert archive["actions"].dtype == np.int8
        np.testing.assert_array_equal(archive["actions"], dataset.actions)
        assert json.loads(str(archive["metadata"]))["n_actions"] == 6


# -- metadata validation in memory -------------------------------------------------------------
BAD_METADATA = {
    "one-agent": ({"n_agents": 1}, r"n_agents must be a positive integer >= 2; got 1 \(int\)"),
    "float-agents": ({"n_agents": 3.0}, r"n_agents must be a positive integer >= 2; got 3.0 \(float\)"),
    "bool-actions": ({"n_actions": True}, r"n_actions must be an integer in \[2, 2\*\*31\)"),
    "too-many-actions": ({"n_actions": 2**31}, r"n_actions must be an integer in \[2, 2\*\*31\)"),
    "env-id-number": ({"env_id": 5}, r"env_id must be a registered environment id \(a str\) or None; got 5"),
    "env-kwargs-list": ({"env_kwargs": [1]}, r"env_kwargs must be a dict with string keys"),
    "extra-int-keys": ({"extra": {1: "x"}}, r"extra must be a dict with string keys"),
    "learner-list": ({"learner": ["logit_q"]}, r"learner must be a dict or None"),
    "learner-no-name": ({"learner": {"params": {}}}, r"learner must have a 'name' string"),
    "learner-unknown": ({"learner": {"name": "logit_qq"}}, r"unknown learner 'logit_qq'.*register_learner"),
    "learner-params": ({"learner": {"name": "logit_q", "params": [1]}}, r"learner\['params'\] must be a dict"),
    "learner-bad-value": ({"learner": {"name": "logit_q", "params": {"alpha": -1.0}}}, r"not describe a valid"),
    "seed-string": ({"seed": "abc"}, r"seed must be an integer in \[0, 2\*\*64\); got 'abc' \(str\)"),
    "seed-float": ({"seed": 1e40}, r"seed must be an integer in \[0, 2\*\*64\); got 1e\+40 \(float\)"),
    "seed-negative": ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*64\)"),
    "seed-2**64": ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*64\)"),
    "seed-bool": ({"seed": True}, r"seed must be an integer"),
    "version-zero": ({"schema_version": 0}, r"schema_version must be a positive integer; got 0"),
    "package-version": ({"package_version": 1}, r"package_version must be a str"),
    "deep-extra": ({"extra": {"x": json.loads("[" * 40 + "]" * 40)}}, r"extra is nested more than 31 levels"),
}


@pytest.mark.parametrize("change, message", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_metadata_validates_every_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TraceDatasetError, match=message):
        TraceMetadata(**{"n_agents": 3, "n_actions": 6, **change})


def test_metadata_self_reference_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(TraceDatasetError, match="refers to itself"):
        TraceMetadata(3, 6, extra=loop)


def test_metadata_normalises_numpy_integers() -> None:
    meta = TraceMetadata(np.int64(3), np.int32(6), seed=np.uint64(2**64 - 1))  # type: ignore[arg-type]
    assert (type(meta.n_agents), type(meta.n_actions), type(meta.seed)) == (int, int, int)
    assert meta.seed == 2**64 - 1


def test_from_dict_refuses_non_dicts() -> None:
    with pytest.raises(TraceDatasetError, match="trace metadata must be a dict; got"):
        TraceMetadata.from_dict([1, 2])  # type: ignore[arg-type]


# -- differences -------------------------------------------------------------------------------
def test_differences_of_equal_datasets_is_empty() -> None:
    assert make_dataset().differences(make_dataset()) == []
    assert make_dataset(rewards=False).differences(make_dataset(rewards=False)) == []


def test_differences_name_the_cells() -> None:
    left = make_dataset()
    actions = left.actions.copy()
    actions[1, 2, 0] = (actions[1, 2, 0] + 1) % 6
    actions[3, 4, 2] = (actions[3, 4, 2] + 2) % 6
    assert left.rewards is not None
    rewards = left.rewards.copy()
    rewards[0, 1, 1] = np.nextafter(rewards[0, 1, 1], np.float32(np.inf))  # one ulp: only full precision tells
    right = TraceDataset(actions, left.metadata, rewards)
    assert left != right and repr(left) == repr(right)
    lines = left.differences(right)
    assert lines == [
        "actions differ in 2 of 60 cells:",
        f"  episode 1, round 2, agent 0: {left.actions[1, 2, 0]} != {actions[1, 2, 0]}",
        f"  episode 3, round 4, agent 2: {left.actions[3, 4, 2]} != {actions[3, 4, 2]}",
        "rewards differ in 1 of 60 cells:",
        f"  episode 0, round 1, agent 1: {left.rewards[0, 1, 1]!s} != {rewards[0, 1, 1]!s}",  # float32 precision
    ]
    assert str(left.rewards[0, 1, 1]) != str(rewards[0, 1, 1])


def test_differences_are_capped_at_max_items() -> None:
    left = make_dataset()
    right = TraceDataset((left.actions + 1) % 6, left.metadata, left.rewards)
    lines = left.differences(right, max_items=3)
    assert lines[0] == "actions differ in 60 of 60 cells:"
    assert len(lines) == 5 and lines[-1] == "  ... and 57 more"


def test_differences_in_shapes_rewards_and_metadata() -> None:
    base = make_dataset()
    assert base.differences(make_dataset(n_rounds=6)) == [
        "actions shapes differ: (4, 5, 3) != (4, 6, 3) (episodes, rounds, agents)",
        "rewards shapes differ: (4, 5, 3) != (4, 6, 3) (episodes, rounds, agents)",
        "metadata.env_kwargs['n_rounds']: 5 != 6",
    ]
    assert base.differences(make_dataset(rewards=False)) == [
        "rewards: the left dataset has rewards, the right has none"
    ]
    other = make_dataset(seed=0, env_id="mechgym/PublicGoods-v0", extra={"note": "changed"})
    assert base.differences(TraceDataset(base.actions, other.metadata, base.rewards)) == [
        "metadata.env_id: 'mechgym/Congestion-v0' != 'mechgym/PublicGoods-v0'",
        "metadata.extra['note']: 'test' != 'changed'",
        "metadata.extra['values']: [1, 2.5, None] != (missing)",
    ]
    assert base.differences("not a dataset") == ["the other object is a str, not a TraceDataset"]  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 3), n_rounds=st.integers(4, 5), rewards=st.booleans(), env=st.sampled_from([ENV_ID, None]))
def test_differences_are_empty_exactly_when_equal(seed: int, n_rounds: int, rewards: bool, env: str | None) -> None:
    left = make_dataset()
    right = make_dataset(seed=seed, n_rounds=n_rounds, rewards=rewards, env_id=env)
    assert (left.differences(right) == []) == (left == right)


def test_failed_equality_assertion_says_where() -> None:
    """tests/conftest.py's pytest_assertrepr_compare explains ``assert a == b`` between datasets."""
    left = make_dataset()
    actions = left.actions.copy()
    actions[2, 0, 1] = (actions[2, 0, 1] + 1) % 6
    right = TraceDataset(actions, left.metadata, left.rewards)
    with pytest.raises(AssertionError) as info:
        assert left == right
    text = str(info.value)
    assert "actions differ in 1 of 60 cells:" in text
    assert f"episode 2, round 0, agent 1: {left.actions[2, 0, 1]} != {actions[2, 0, 1]}" in text


# -- save_traces writes what load_traces reads ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["t.npz", "t.NPZ", "t.parquet", "t.traces"])
def test_save_traces_writes_the_format_load_traces_reads(name: str, tmp_path: Path) -> None:
    from mechgym.traces import save_traces

    dataset = make_dataset()
    path = save_traces(dataset, tmp_path / name)
    is_zip = path.read_bytes()[:2] == b"PK"
    assert is_zip == name.lower().endswith(".npz")
    assert load_traces(path) == dataset


def test_save_traces_refuses_a_format_load_traces_would_not_read(tmp_path: Path) -> None:
    from mechgym.traces import save_traces

    with pytest.raises(TraceDatasetError, match="reads a file named so as parquet"):
        save_traces(make_dataset(), tmp_path / "t.parquet", format="npz")
    with pytest.raises(TraceDatasetError, match="reads a file named so as npz"):
        save_traces(make_dataset(), tmp_path / "t.npz", format="parquet")
    with pytest.raises(TraceDatasetError, match="format must be"):
        save_traces(make_dataset(), tmp_path / "t.parquet", format="csv")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert load_traces(save_traces(make_dataset(), tmp_path / "t.npz", format="npz")) == make_dataset()
