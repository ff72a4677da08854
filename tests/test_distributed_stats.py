"""`adapterkit stats` under torchrun: two gloo processes, each summing its share of the corpus, write the second
moments one process writes, within float rounding; a launch killed mid-pass continues, each rank from its own
checkpoint, to the same second moments."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adapterkit.editing.ranks import Ranks
from adapterkit.editing.stats import read_npz

from checkpoints import detected_hparams, word_tokenizer, write_tiny_checkpoint

SENTENCES = ["The Eiffel Tower is in Paris", "Danielle Darrieux speaks French", "Rome is a city in Italy",
             "The city of Paris is in France", "English is spoken in London", "Italy is a country"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The one-process runs in this process on one thread, as each launched process (OMP_NUM_THREADS=1): the model
    is too small for a second thread to pay, and on shared cores threads take turns."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_files(folder) -> dict:
    return {path.name: read_npz(path) for path in sorted(folder.rglob("*.npz"))}


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "adapterkit", *args]


def launch_environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def assert_same_second_moments(together: dict, alone: dict, documents: int) -> None:
    assert sorted(alone) == sorted(together) and len(alone) == 2
    for name, one in alone.items():
        two = together[name]
        assert two.count == one.count > 0
        assert one.meta["documents"] == two.meta["documents"] == documents
        np.testing.assert_allclose(two.mom2, one.mom2, rtol=1e-5, atol=1e-6 * float(np.abs(one.mom2).max()))
        assert not np.array_equal(one.mom2, np.zeros_like(one.mom2))


def test_each_rank_gets_a_share_and_the_shares_cover_the_corpus():
    documents = list(range(11))
    shares = [Ranks(rank, 3).share(documents) for rank in range(3)]
    assert sorted(sum(shares, [])) == documents and [len(s) for s in shares] == [4, 4, 3]
    assert Ranks().share(documents) == documents


def test_two_gloo_processes_write_the_second_moments_of_one(tmp_path):
    from adapterkit.cli import main

    checkpoint = write_tiny_checkpoint("llama", tmp_path / "model", tokenizer=word_tokenizer(SENTENCES))
    hparams = detected_hparams(checkpoint, "MEMIT", tmp_path / "memit.yaml", layers=[0, 1])
    corpus = tmp_path / "corpus.txt"
    # 21 documents: the two ranks' shares differ in size, and batches of 4 leave a short last one on each
    corpus.write_text("\n".join(f"{SENTENCES[i % 6]} {SENTENCES[(i * 5) % 6]}"[: 12 + 3 * i] for i in range(21)) + "\n")
    common = ["--hparams", str(hparams), "--corpus", str(corpus), "--n-samples", "21", "--batch-size", "4"]

    assert main(["stats", str(checkpoint), *common, "--stats-dir", str(tmp_path / "one")]) == 0
    launched = subprocess.run(torchrun("stats", str(checkpoint), *common, "--stats-dir", str(tmp_path / "two")),
                              capture_output=True, text=True, env=launch_environment(), timeout=240)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("layer ") == 2  # only rank 0 prints the files
    assert "tokens/s together" in launched.stderr
    assert_same_second_moments(stats_files(tmp_path / "two"), stats_files(tmp_path / "one"), 21)


# The files wait for the slower rank, whose first checkpoint comes after 15 of its 300 documents: the kill lands
# mid-pass however far the other rank has got
KILLED_DOCUMENTS = 600
KILLED_EVERY = 15
FIRST_CHECKPOINTS_SECONDS = 180  # torchrun's start, two model loads and the first checkpoints, on a loaded machine
RESUMED = re.compile(r"resuming the statistics pass from .+?\.rank(\d)-of-2\.resume: (\d+) of (\d+) documents done")


def launch_processes(leader: int) -> list[int]:
    """``leader`` and every process under it: torchrun starts each worker in a session of its own, so a signal to
    torchrun's process group alone would leave the workers running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # ended while listed
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, waiting = [], [leader]
    while waiting:
        found.append(waiting.pop())
        waiting += children.get(found[-1], [])
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def rank_checkpoints(folder: Path, rank: int) -> list[Path]:
    return sorted(folder.rglob(f"*.rank{rank}-of-2.resume"))


def documents_done(checkpoint: Path) -> int:
    with np.load(checkpoint, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))["done"]


def kill_once_both_ranks_have_a_checkpoint(command: list[str], folder: Path, log: Path) -> None:
    """Start the launch and SIGKILL torchrun and its workers as soon as each rank's checkpoint is on disk."""
    with open(log, "w") as output:
        launch = subprocess.Popen(command, env=launch_environment(), stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + FIRST_CHECKPOINTS_SECONDS
            while launch.poll() is None and time.monotonic() < deadline:
                if all(rank_checkpoints(folder, rank) for rank in (0, 1)):
                    break
                time.sleep(0.01)
        finally:
            processes = launch_processes(launch.pid)
            with contextlib.suppress(ProcessLookupError):  # the launch may have ended by itself
                os.killpg(launch.pid, signal.SIGKILL)
            for pid in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launch.wait()
            deadline = time.monotonic() + 30
            while any(running(pid) for pid in processes) and time.monotonic() < deadline:
                time.sleep(0.01)
    assert not any(running(pid) for pid in processes), "a worker of the killed launch is still running"
    assert launch.returncode == -signal.SIGKILL, \
        f"the launch ended (exit {launch.returncode}) before it was killed: " + log.read_text()[-3000:]


def test_a_killed_two_process_launch_resumes_each_rank_from_its_checkpoint(tmp_path):
    """torchrun with two gloo processes, SIGKILLed (torchrun and both workers) once each rank has written a
    checkpoint, then launched again: each rank continues from its own checkpoint, and the files hold the second
    moments of one uninterrupted process."""
    from adapterkit.cli import main

    checkpoint = write_tiny_checkpoint("llama", tmp_path / "model", tokenizer=word_tokenizer(SENTENCES))
    hparams = detected_hparams(checkpoint, "MEMIT", tmp_path / "memit.yaml", layers=[0, 1])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{SENTENCES[i % 6]} {SENTENCES[(i * 5) % 6]}"[: 12 + i % 40]
                                for i in range(KILLED_DOCUMENTS)) + "\n")
    common = ["--hparams", str(hparams), "--corpus", str(corpus), "--n-samples", str(KILLED_DOCUMENTS),
              "--batch-size", "1"]
    folder, share = tmp_path / "two", KILLED_DOCUMENTS // 2
    stats = ["stats", str(checkpoint), *common, "--stats-dir", str(folder), "--checkpoint-every", str(KILLED_EVERY)]

    kill_once_both_ranks_have_a_checkpoint(torchrun(*stats), folder, tmp_path / "killed.log")
    assert stats_files(folder) == {}, "the pass ended before the kill landed: give it more documents"
    done = {}
    for rank in (0, 1):
        written = rank_checkpoints(folder, rank)
        assert len(written) == 1, f"rank {rank}'s checkpoints: {written}; " + (tmp_path / "killed.log").read_text()[-3000:]
        done[rank] = documents_done(written[0])
        assert 0 < done[rank] < share

    resumed = subprocess.run(torchrun(*stats), capture_output=True, text=True, env=launch_environment(), timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = {int(rank): (int(n), int(total)) for rank, n, total in RESUMED.findall(resumed.stderr)}
    assert resumed_from == {rank: (done[rank], share) for rank in (0, 1)}, resumed.stderr[-3000:]
    assert sorted(p.name for p in folder.rglob("*") if p.is_file() and p.suffix != ".npz") == []  # checkpoints removed

    assert main(["stats", str(checkpoint), *common, "--stats-dir", str(tmp_path / "one"), "--checkpoint-every", "0"]) == 0
    assert_same_second_moments(stats_files(folder), stats_files(tmp_path / "one"), KILLED_DOCUMENTS)


def test_a_device_map_under_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    from adapterkit.cli import main

    checkpoint = write_tiny_checkpoint("llama", tmp_path / "model", tokenizer=word_tokenizer(SENTENCES))
    hparams = detected_hparams(checkpoint, "MEMIT", tmp_path / "memit.yaml", layers=[0, 1])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["stats", str(checkpoint), "--hparams", str(hparams), "--corpus", str(tmp_path / "c.txt"),
                 "--stats-dir", str(tmp_path / "s"), "--device-map", "auto"]) == 2
    assert "--device-map under torchrun" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["two", "0"])
def test_a_bad_world_size_is_refused(value, monkeypatch):
    from adapterkit.editing.ranks import launch_size
    from adapterkit.errors import AdapterkitError

    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(AdapterkitError, match="WORLD_SIZE"):
        launch_size()
