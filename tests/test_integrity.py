"""Nothing saved is lost or silently changed: bit flips, tampered metadata, killed writers, file modes.

Trace files (Parquet and npz) and fit files must either load exactly what was saved or raise a
:class:`MechGymError` naming the file, whatever single bit or byte was damaged.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import diml_inverse
import mechgym.files
from diml_inverse.config import FitConfig
from diml_inverse.result import FitFileError, FitResult
from mechgym.cli import main as mechgym_main
from mechgym.errors import MechGymError
from mechgym.files import atomic_write, remove_stale_temporaries
from mechgym.learners import LogitQ
from mechgym.mechanisms import NeuralJointMechanism
from mechgym.traces import TraceDataset, TraceFileError, TraceMetadata, load_traces, save_npz, save_traces
from mechgym.traces.io import to_arrow

ENV_ID = "mechgym/Congestion-v0"
FLIPS = 300
FIT_FLIPS = 150

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_traces(n_episodes: int = 6, n_rounds: int = 10, *, rewards: bool = True) -> TraceDataset:
    rng = np.random.default_rng(0)
    shape = (n_episodes, n_rounds, 3)
    metadata = TraceMetadata(
        n_agents=3,
        n_actions=6,
        env_id=ENV_ID,
        env_kwargs={"n_rounds": n_rounds},
        learner=LogitQ().to_dict(),
        seed=7,
        extra={"note": "integrity", "values": [1, 2.5, None]},
    )
    return TraceDataset(
        actions=rng.integers(0, 6, shape),
        rewards=rng.normal(size=shape).astype(np.float32) if rewards else None,
        metadata=metadata,
    )


def flipped(data: bytes, offsets: np.ndarray, bits: np.ndarray) -> Iterator[bytes]:
    """``data`` with one bit flipped, for each (offset, bit)."""
    for offset, bit in zip(offsets, bits, strict=True):
        copy = bytearray(data)
        copy[int(offset)] ^= 1 << int(bit)
        yield bytes(copy)


def parquet_page_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the column chunks (dictionary and data pages with their headers)."""
    metadata = pq.ParquetFile(path).metadata
    ranges = []
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            ranges.append((start, start + chunk.total_compressed_size))
    return ranges


def zip_data_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the (compressed) member data of a zip file."""
    data = path.read_bytes()
    ranges = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
            start = info.header_offset + 30 + name_length + extra_length
            ranges.append((start, start + info.compress_size))
    return ranges


def offsets_in(ranges: list[tuple[int, int]], rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` offsets drawn uniformly from the union of ``ranges``."""
    everything = np.concatenate([np.arange(start, end) for start, end in ranges])
    return rng.choice(everything, size=n)


def outcomes_of_flips(
    path: Path, ranges: list[tuple[int, int]], seed: int, check: Callable[[Path], bool]
) -> Counter[str]:
    """Flip one bit per copy (``FLIPS`` copies) at random offsets in ``ranges``; ``check`` loads and compares.

    Every copy must load equal to the original (``check`` returns True) or raise a MechGymError naming the
    file on one line; any other exception fails the test. Returns the count of each outcome.
    """
    data = path.read_bytes()
    rng = np.random.default_rng(seed)
    offsets = offsets_in(ranges, rng, FLIPS)
    bits = rng.integers(0, 8, FLIPS)
    damaged = path.with_name("damaged" + path.suffix)
    outcomes: Counter[str] = Counter()
    for offset, content in zip(offsets, flipped(data, offsets, bits), strict=True):
        damaged.write_bytes(content)
        try:
            same = check(damaged)
        except MechGymError as error:
            message = str(error)
            assert str(damaged) in message and "\n" not in message, message
            outcomes["crc" if "CRC" in message else "refused"] += 1
            continue
        assert same, f"a bit flip at byte {offset} loaded changed content without an error"
        outcomes["equal"] += 1
    return outcomes


# -- 1. trace files under bit flips -----------------------------------------------------------
@pytest.fixture
def quiet_legacy_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """A flip that destroys the stored hash turns a file into a legacy one: its warning is expected here."""
    caplog.set_level(logging.ERROR, logger="mechgym.traces.io")


@pytest.mark.usefixtures("quiet_legacy_warnings")
@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("region", ["whole-file", "data-pages"])
def test_bit_flips_in_trace_files_never_change_what_loads(tmp_path: Path, suffix: str, region: str) -> None:
    original = make_traces()
    path = original.save(tmp_path / f"traces{suffix}")
    if region == "whole-file":
        ranges = [(0, path.stat().st_size)]
    else:
        ranges = parquet_page_ranges(path) if suffix == ".parquet" else zip_data_ranges(path)
    outcomes = outcomes_of_flips(
        path, ranges, seed=len(suffix) + len(region), check=lambda p: load_traces(p) == original
    )
    assert sum(outcomes.values()) == FLIPS
    assert outcomes["crc"] + outcomes["refused"] > FLIPS / 2, outcomes
    if region == "data-pages":  # the page / member CRC-32 is what catches most of these
        assert outcomes["crc"] > FLIPS / 2, outcomes


def test_renamed_rewards_column_is_refused(tmp_path: Path) -> None:
    """The footer flip of the issue renamed ``rewards`` and the file loaded with ``rewards=None``."""
    table = to_arrow(make_traces())
    renamed = table.rename_columns(["episode", "round", "actions", "rewardr"])
    for metadata in (table.schema.metadata, {b"mechgym": table.schema.metadata[b"mechgym"]}):  # with / without hash
        pq.write_table(renamed.replace_schema_metadata(metadata), tmp_path / "t.parquet")
        with pytest.raises(TraceFileError, match=r"t.parquet: unexpected column\(s\) \['rewardr'\]"):
            load_traces(tmp_path / "t.parquet")


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_content_hash_catches_consistent_rewrites(tmp_path: Path, suffix: str) -> None:
    """Re-encoded content with valid page checksums and CRCs but another action is refused by the hash."""
    original = make_traces()
    changed = original.actions.copy()
    changed[2, 3, 1] = (changed[2, 3, 1] + 1) % 6
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        table = to_arrow(original)
        forged = to_arrow(TraceDataset(changed, original.metadata, original.rewards))
        pq.write_table(forged.replace_schema_metadata(table.schema.metadata), path, write_page_checksum=True)
    else:
        comment = zipfile.ZipFile(save_npz(original, path)).comment
        save_npz(TraceDataset(changed, original.metadata, original.rewards), path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.comment = comment
    with pytest.raises(TraceFileError, match=r"does not match its SHA-256 checksum.*corrupted"):
        load_traces(path)


def test_files_without_a_hash_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Files written before checksums (plain pyarrow / numpy here) still load, with a warning."""
    original = make_traces()
    table = to_arrow(original)
    old_parquet = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"mechgym": table.schema.metadata[b"mechgym"]}), old_parquet)
    old_npz = tmp_path / "old.npz"
    assert original.rewards is not None
    np.savez_compressed(
        old_npz,
        actions=original.actions.astype(np.int8),
        metadata=np.array(table.schema.metadata[b"mechgym"].decode()),
        rewards=original.rewards,
    )
    for path in (old_parquet, old_npz):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mechgym.traces.io"):
            assert load_traces(path) == original
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert f"{path} has no content checksum" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_traces(original.save(tmp_path / "new.parquet")) == original
    assert not caplog.records  # files written now carry their hash


def test_saved_files_carry_checksums(tmp_path: Path) -> None:
    original = make_traces()
    parquet = original.save(tmp_path / "t.parquet")
    assert len(pq.read_schema(parquet).metadata[b"mechgym.sha256"]) == 64
    good = pq.ParquetFile(parquet, page_checksum_verification=True).read()
    assert good.num_rows == 60
    npz = original.save(tmp_path / "t.npz")
    assert zipfile.ZipFile(npz).comment.startswith(b"mechgym.sha256=")


# -- 2. fit files under byte flips ------------------------------------------------------------
def make_fit() -> FitResult:
    mechanism = NeuralJointMechanism(3, 4, hidden=8, seed=0)
    return FitResult(
        mechanism=mechanism,
        learner=LogitQ(alpha=0.3),
        q0=torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        history=[{"epoch": 1, "train_nll": 1.25, "valid_nll": 1.5, "seconds": 0.1}],
        config=FitConfig(model="neural", seed=0),
        selected_epoch=1,
        best_epoch=1,
        env_id="mechgym/NeuralMechanism-v0",
        env_kwargs={},
        model_name="neural",
    )


def same_fit(loaded: FitResult, original: FitResult) -> bool:
    left, right = loaded.mechanism.state_dict(), original.mechanism.state_dict()
    return (
        type(loaded.mechanism) is type(original.mechanism)
        and left.keys() == right.keys()
        and all(left[k].dtype == right[k].dtype and torch.equal(left[k], right[k]) for k in left)
        and loaded.q0 is not None
        and original.q0 is not None
        and torch.equal(loaded.q0, original.q0)
        and loaded.learner == original.learner
        and loaded.history == original.history
        and loaded.config == original.config
        and (loaded.selected_epoch, loaded.best_epoch) == (original.selected_epoch, original.best_epoch)
    )


def test_byte_flips_in_fit_files_never_change_what_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="diml_inverse.result")
    original = make_fit()
    path = original.save(tmp_path / "fit.pt")
    assert same_fit(diml_inverse.load(path), original)
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.pt"
    outcomes: Counter[str] = Counter()
    for _ in range(FIT_FLIPS):
        copy = bytearray(data)
        offset = int(rng.integers(len(copy)))
        copy[offset] ^= int(rng.integers(1, 256))
        damaged.write_bytes(bytes(copy))
        try:
            loaded = diml_inverse.load(damaged)
        except MechGymError as error:
            assert str(damaged) in str(error) and "\n" not in str(error), str(error)
            outcomes["refused"] += 1
            continue
        assert same_fit(loaded, original), f"a byte flip at {offset} loaded changed weights or metadata"
        outcomes["equal"] += 1
    assert outcomes["refused"] > FIT_FLIPS / 2, outcomes


def test_fit_content_hash_catches_consistent_rewrites(tmp_path: Path) -> None:
    path = make_fit().save(tmp_path / "fit.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["layer1.bias"][0] += 1.0
    torch.save(payload, path)  # valid zip CRCs, stale hash
    with pytest.raises(FitFileError, match=r"fit.pt: the content does not match its SHA-256 checksum"):
        diml_inverse.load(path)


def test_fit_files_without_a_hash_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    original = make_fit()
    path = original.save(tmp_path / "fit.pt")
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]
    torch.save(payload, path)  # the layout of files written before content hashes
    with caplog.at_level(logging.WARNING, logger="diml_inverse.result"):
        assert same_fit(diml_inverse.load(path), original)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "has no content checksum" in caplog.records[0].getMessage()


# -- 3. tampered metadata ---------------------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000
TRACE_TAMPERING = {
    "env-id-number": ('"env_id": 5', "env_id must be a registered environment id"),
    "learner-list": ('"learner": [1, 2]', "learner must be a dict or None"),
    "learner-unknown": ('"learner": {"name": "logit_qq", "params": {}}', "unknown learner 'logit_qq'"),
    "learner-bad-params": ('"learner": {"name": "logit_q", "params": {"alpha": "fast"}}', "not describe a valid"),
    "seed-string": ('"seed": "abc"', r"seed must be an integer in \[0, 2\*\*64\); got 'abc'"),
    "seed-float": ('"seed": 1e40', r"seed must be an integer in \[0, 2\*\*64\); got 1e\+40 \(float\)"),
    "seed-negative": ('"seed": -1', r"seed must be an integer in \[0, 2\*\*64\)"),
    "seed-too-large": (f'"seed": {2**64}', r"seed must be an integer in \[0, 2\*\*64\)"),
    "n-actions-overflow": ('"n_actions": 1e400', "too large for a float"),
    "n-actions-float": ('"n_actions": 6.0', "n_actions must be an integer"),
    "n-actions-one": ('"n_actions": 1', "n_actions must be an integer in \\[2, 2\\*\\*31\\)"),
    "n-agents-mismatch": ('"n_agents": 4', r"fixed_size_list\[4\]|n_agents=4"),
    "n-agents-bool": ('"n_agents": true', "n_agents must be a positive integer"),
    "env-kwargs-list": ('"env_kwargs": [1]', "env_kwargs must be a dict"),
    "extra-string": ('"extra": "x"', "extra must be a dict"),
    "extra-nan": ('"extra": {"x": NaN}', "NaN is not a number JSON allows"),
    "nested-100k": (f'"extra": {{"deep": {DEEP}}}', "nested deeper than 32"),
    "nested-40": (f'"extra": {{"deep": {"[" * 40 + "]" * 40}}}', "nested deeper than 32"),
    "package-version-number": ('"package_version": 1', "package_version must be a str"),
    "schema-version-zero": ('"schema_version": 0', "no valid schema_version"),
}


def tampered_json(original: TraceDataset, replacement: str) -> str:
    """The metadata JSON of ``original`` with one ``"key": value`` pair replaced by ``replacement`` (raw text)."""
    data = json.loads(to_arrow(original).schema.metadata[b"mechgym"])
    key = replacement.split(":", 1)[0].strip().strip('"')
    del data[key]
    return json.dumps(data)[:-1] + ", " + replacement + "}"


@pytest.mark.usefixtures("quiet_legacy_warnings")
@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("replacement, message", TRACE_TAMPERING.values(), ids=TRACE_TAMPERING.keys())
def test_tampered_trace_metadata_is_refused(tmp_path: Path, suffix: str, replacement: str, message: str) -> None:
    original = make_traces()
    text = tampered_json(original, replacement)
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        pq.write_table(to_arrow(original).replace_schema_metadata({b"mechgym": text.encode()}), path)
    else:
        assert original.rewards is not None
        np.savez(path, actions=original.actions, metadata=np.array(text), rewards=original.rewards)
    with pytest.raises(TraceFileError, match=message) as info:
        load_traces(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.mark.usefixtures("quiet_legacy_warnings")
def test_mechgym_info_never_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints a MechGymError as one line with status 2: every bad file must fail that way."""
    original = make_traces()
    good = original.save(tmp_path / "good.parquet")
    assert mechgym_main(["info", str(good)]) == 0
    bad_files = []
    for name, (replacement, _) in TRACE_TAMPERING.items():
        bad = tmp_path / f"{name}.parquet"
        metadata = {b"mechgym": tampered_json(original, replacement).encode()}
        pq.write_table(to_arrow(original).replace_schema_metadata(metadata), bad)
        bad_files.append(bad)
    data = good.read_bytes()
    for i, content in enumerate(flipped(data, np.arange(0, len(data), 97), np.full(len(range(0, len(data), 97)), 3))):
        damaged = tmp_path / f"flip-{i}.parquet"
        damaged.write_bytes(content)
        bad_files.append(damaged)
    capsys.readouterr()
    for bad in bad_files:
        status = mechgym_main(["info", str(bad)])
        captured = capsys.readouterr()
        if status == 0:  # a flip in bytes nothing reads
            assert load_traces(bad) == original
            continue
        assert status == 2, (bad, captured.err)
        assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err


FIT_TAMPERING: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "format": (lambda d: d.update(format="other/1"), "has format 'other/1'"),
    "family-number": (lambda d: d.update(family=3), "family must be a registered mechanism family"),
    "family-unknown": (lambda d: d.update(family="quantum"), "family must be a registered mechanism family"),
    "mechanism-config-list": (lambda d: d.update(mechanism_config=[1]), "mechanism_config must be a JSON object"),
    "n-actions-inf": (lambda d: d["mechanism_config"].update(n_actions=float("inf")), "does not make a valid fit"),
    "n-actions-string": (lambda d: d["mechanism_config"].update(n_actions="6"), "does not make a valid fit"),
    "learner-list": (lambda d: d.update(learner=[1]), "learner must be a JSON object"),
    "learner-unknown": (lambda d: d.update(learner={"name": "nope", "params": {}}), "unknown learner 'nope'"),
    "history-string": (lambda d: d.update(history="x"), "history must be a list"),
    "history-value": (lambda d: d["history"][0].update(train_nll="low"), "history must be a list"),
    "selected-epoch-float": (lambda d: d.update(selected_epoch=1e40), "selected_epoch must be an epoch number"),
    "best-epoch-negative": (lambda d: d.update(best_epoch=-1), "best_epoch must be an epoch number"),
    "env-id-number": (lambda d: d.update(env_id=5), r"env_id must be a registered"),
    "seed-string": (lambda d: d["config"].update(seed="abc"), r"config\['seed'\] must be an integer in \[0, 2\*\*64\)"),
    "seed-float": (lambda d: d["config"].update(seed=1e40), r"config\['seed'\] must be an integer"),
    "seed-too-large": (lambda d: d["config"].update(seed=2**64), r"config\['seed'\] must be an integer"),
    "config-list": (lambda d: d.update(config=[]), "config must be a JSON object"),
}


@pytest.mark.parametrize("change, message", FIT_TAMPERING.values(), ids=FIT_TAMPERING.keys())
def test_tampered_fit_description_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    path = make_fit().save(tmp_path / "fit.pt")
    payload = torch.load(path, weights_only=True)
    description = json.loads(payload["description"])
    change(description)
    payload["description"] = json.dumps(description)
    del payload["sha256"]  # tampering that also dropped the hash: the field checks must still refuse it
    torch.save(payload, path)
    with pytest.raises(FitFileError, match=message) as info:
        diml_inverse.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


PAYLOAD_TAMPERING: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "description-100k-deep": (lambda p: p.update(description=DEEP), "nested deeper than 32"),
    "description-not-json": (lambda p: p.update(description="{nope"), "not valid JSON"),
    "description-tensor": (lambda p: p.update(description=torch.zeros(1)), "must be a JSON string"),
    "nan-weights": (lambda p: p["state_dict"]["layer1.bias"].fill_(float("nan")), "holds NaN or infinite"),
    "missing-weight": (lambda p: p["state_dict"].pop("layer1.bias"), "do not fit a neural mechanism"),
    "q0-shape": (lambda p: p.update(q0=torch.zeros(2, 4)), r"q0 must be finite floats of shape .* \[3, 4\]"),
    "q0-string": (lambda p: p.update(q0="zeros"), "q0 must be a tensor or None"),
    "extra-key": (lambda p: p.update(code="x"), "is not a diml_inverse fit file"),
    "empty-payload": (lambda p: p.clear(), "is not a diml_inverse fit file"),
}


@pytest.mark.parametrize("change, message", PAYLOAD_TAMPERING.values(), ids=PAYLOAD_TAMPERING.keys())
def test_tampered_fit_payload_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: Any, message: str
) -> None:
    caplog.set_level(logging.ERROR, logger="diml_inverse.result")
    path = make_fit().save(tmp_path / "fit.pt")
    payload = torch.load(path, weights_only=True)
    change(payload)
    payload.pop("sha256", None)
    torch.save(payload, path)
    with pytest.raises(FitFileError, match=message):
        diml_inverse.load(path)


# -- 4. temporary files and modes -------------------------------------------------------------
#: A writer that goes through atomic_write, writes half a file, says so and waits for a line on stdin.
_WRITER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("files_under_test", sys.argv[1])
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
def write(file):
    file.write(b"written by a writer that was still running")
    file.flush()
    print("writing", flush=True)
    sys.stdin.readline()
files.atomic_write(sys.argv[2], write)
"""


def start_writer(target: Path) -> subprocess.Popen[str]:
    """A process in the middle of ``atomic_write(target, ...)`` (it loads only mechgym/files.py, to start fast)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, mechgym.files.__file__, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    return process


def temporaries(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(".tmp")}


def test_killed_writers_temporaries_are_removed_but_live_ones_kept(tmp_path: Path) -> None:
    dead = start_writer(tmp_path / "dead.parquet")
    live = start_writer(tmp_path / "live.parquet")
    try:
        (dead_temporary,) = {n for n in temporaries(tmp_path) if n.startswith(".dead.parquet~")}
        (live_temporary,) = {n for n in temporaries(tmp_path) if n.startswith(".live.parquet~")}
        assert f"~{dead.pid}~" in dead_temporary and f"~{live.pid}~" in live_temporary
        dead.send_signal(signal.SIGKILL)  # kill -9 in the middle of a save
        dead.wait(timeout=30)
        other_host = tmp_path / f".x.parquet~elsewhere.example~{os.getpid()}~{'0' * 12}.tmp"
        other_host.write_bytes(b"a writer on another host, maybe running")
        old = tmp_path / f".y.parquet~elsewhere.example~1~{'a' * 12}.tmp"
        old.write_bytes(b"a writer on another host, two days ago")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old, (two_days_ago, two_days_ago))
        foreign = [tmp_path / ".notes.tmp", tmp_path / ".t.parquet.0123456789ab.tmp", tmp_path / "x~h~1~ab.tmp"]
        for path in foreign:
            path.write_bytes(b"not ours")
            os.utime(path, (two_days_ago, two_days_ago))

        save_traces(make_traces(), tmp_path / "t.parquet")

        assert temporaries(tmp_path) == {live_temporary, other_host.name} | {p.name for p in foreign}
        assert live.stdin is not None
        live.stdin.write("go on\n")  # the concurrent save completes undisturbed
        live.stdin.flush()
        assert live.wait(timeout=30) == 0
        assert (tmp_path / "live.parquet").read_bytes() == b"written by a writer that was still running"
        assert live_temporary not in temporaries(tmp_path)
        assert load_traces(tmp_path / "t.parquet") == make_traces()
    finally:
        for process in (dead, live):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_fit_saves_clean_up_too(tmp_path: Path) -> None:
    dead = start_writer(tmp_path / "old-fit.pt")
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    assert len(temporaries(tmp_path)) == 1
    make_fit().save(tmp_path / "fit.pt")
    assert temporaries(tmp_path) == set() and [p.name for p in tmp_path.iterdir()] == ["fit.pt"]
    assert remove_stale_temporaries(tmp_path) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_usual_mode(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        paths = [
            save_traces(make_traces(), tmp_path / "t.parquet"),
            save_npz(make_traces(), tmp_path / "t.npz"),
            make_fit().save(tmp_path / "fit.pt"),
            atomic_write(tmp_path / "raw.bin", lambda file: file.write(b"x")),
        ]
    finally:
        os.umask(previous)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_interrupted_fit_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_fit().save(tmp_path / "fit.pt")
    before = path.read_bytes()

    def half_a_save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK half of a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_a_save)
    with pytest.raises(KeyboardInterrupt):
        make_fit().save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["fit.pt"]


def test_cleanup_never_removes_directories_or_links(tmp_path: Path) -> None:
    """Directories and links with our temporary-file names are never removed."""
    two_days_ago = time.time() - 2 * 24 * 3600
    directory = tmp_path / f".d~elsewhere~1~{'b' * 12}.tmp"
    directory.mkdir()
    link = tmp_path / f".l~elsewhere~1~{'c' * 12}.tmp"
    link.symlink_to(tmp_path / "t.parquet")
    os.utime(directory, (two_days_ago, two_days_ago))
    assert remove_stale_temporaries(tmp_path) == []
    assert directory.is_dir() and link.is_symlink()


def test_arrow_table_keeps_its_hash_through_plain_pyarrow(tmp_path: Path) -> None:
    """``to_arrow`` tables written by plain pyarrow (rows in any order) still verify."""
    original = make_traces()
    table = to_arrow(original)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    pq.write_table(shuffled, tmp_path / "t.parquet")
    assert load_traces(tmp_path / "t.parquet") == original
