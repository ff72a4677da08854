"""`adapterkit stats` under torchrun: two gloo processes, each summing its share of the corpus, write the second
moments one process writes, within float rounding."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from adapterkit.editing.ranks import Ranks
from adapterkit.editing.stats import read_npz

from checkpoints import detected_hparams, word_tokenizer, write_tiny_checkpoint

SENTENCES = ["The Eiffel Tower is in Paris", "Danielle Darrieux speaks French", "Rome is a city in Italy",
             "The city of Paris is in France", "English is spoken in London", "Italy is a country"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_files(folder) -> dict:
    return {path.name: read_npz(path) for path in sorted(folder.rglob("*.npz"))}


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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         "-m", "adapterkit", "stats", str(checkpoint), *common, "--stats-dir", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=240)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("layer ") == 2  # only rank 0 prints the files
    assert "tokens/s together" in launched.stderr

    alone, together = stats_files(tmp_path / "one"), stats_files(tmp_path / "two")
    assert sorted(alone) == sorted(together) and len(alone) == 2
    for name, one in alone.items():
        two = together[name]
        assert two.count == one.count > 0
        assert one.meta["documents"] == two.meta["documents"] == 21
        np.testing.assert_allclose(two.mom2, one.mom2, rtol=1e-5, atol=1e-6 * float(np.abs(one.mom2).max()))
        assert not np.array_equal(one.mom2, np.zeros_like(one.mom2))


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
