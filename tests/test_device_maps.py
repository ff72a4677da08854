"""Models placed by accelerate (``load_model(device_map=...)``): a tiny model split over the CPU and disk offload
edits as the same model loaded plainly, restores and replays its deltas bit for bit, refuses to write a weight
that was offloaded, and a placement planned on the meta device puts the edited layers where expected.

This machine has the CPU alone, so the split is the CPU and the disk: accelerate's hooks are on every module and
the offloaded layers are loaded at each forward, as on a machine with GPUs.
"""
from __future__ import annotations

import json

import pytest
import torch

import adapterkit
from adapterkit.checkpoints.loading import load_model
from adapterkit.checkpoints.placement import is_placed, parse_max_memory, placement_options
from adapterkit.editing import speedups
from adapterkit.errors import AdapterkitError

from checkpoints import detected_hparams, word_tokenizer, write_tiny_checkpoint

REQUESTS = [{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": " Rome", "ground_truth": " Paris"},
            {"prompt": "Danielle Darrieux speaks", "subject": "Danielle Darrieux", "target_new": " English",
             "ground_truth": " French"}]
WORDS = ["The Eiffel Tower is in Rome Paris", "Danielle Darrieux speaks English French", "Therefore Because I You a"]
LAST_TWO_ON_DISK = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                    "model.layers.1": "cpu", "model.layers.2": "disk", "model.layers.3": "disk",
                    "model.norm": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny four-layer model of the llama declaration with a word tokenizer, and quick ROME / MEMIT hparams."""
    root = tmp_path_factory.mktemp("device-maps")
    path = write_tiny_checkpoint("llama", root / "model", tokenizer=word_tokenizer(WORDS))
    quick = {"mom2_adjustment": False, "v_num_grad_steps": 6, "context_template_length_params": [[4, 2]]}
    return {"path": path, "root": root,
            "ROME": detected_hparams(path, "ROME", root / "rome.yaml", layers=[1], **quick),
            "MEMIT": detected_hparams(path, "MEMIT", root / "memit.yaml", layers=[0, 1], **quick)}


def placed(checkpoint, device_map=LAST_TWO_ON_DISK, **options):
    model, tok = load_model(checkpoint["path"], device_map=device_map, offload_folder=checkpoint["root"] / "offload",
                            **options)
    return model, tok


def weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.device.type != "meta"}


def hooked(model) -> bool:
    return any(hasattr(m, "_hf_hook") for m in model.modules())


@pytest.mark.parametrize("method", ["ROME", "MEMIT"])
def test_a_split_model_edits_as_the_plain_one_and_restores_bit_for_bit(checkpoint, method, tmp_path):
    model, tok = placed(checkpoint)
    assert hooked(model) and is_placed(model)
    assert model.get_parameter("model.layers.3.mlp.down_proj.weight").device.type == "meta"
    before = weights(model)
    result = adapterkit.edit(model, tok, REQUESTS, checkpoint[method], evaluate=False)

    plain, plain_tok = load_model(checkpoint["path"])
    assert not is_placed(plain)
    with speedups.enabled(False):  # the path a placed model takes by itself
        straightforward = adapterkit.edit(plain, plain_tok, REQUESTS, checkpoint[method], evaluate=False)
    assert sorted(result.deltas) == sorted(straightforward.deltas) and result.deltas
    for name, delta in result.deltas.items():
        expected = straightforward.deltas[name]
        assert torch.allclose(delta, expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max())), name
    straightforward.restore()
    fast = adapterkit.edit(plain, plain_tok, REQUESTS, checkpoint[method], evaluate=False)
    for name, delta in result.deltas.items():  # the fast path on one device: the same edit up to float rounding
        expected = fast.deltas[name]
        assert float((delta - expected).norm() / expected.norm()) < 1e-3, name

    saved = tmp_path / "deltas.safetensors"
    result.save(saved)
    edited = weights(model)
    result.restore()
    assert all(torch.equal(p, before[n]) for n, p in weights(model).items())
    replayed = adapterkit.apply_deltas(model, saved)
    assert all(torch.equal(p, edited[n]) for n, p in weights(model).items())
    replayed.restore()
    assert all(torch.equal(p, before[n]) for n, p in weights(model).items())


def kept_where(result) -> set:
    return {t.device.type for t in [*result.originals.values(), *result.deltas.values()]}


def test_originals_kept_on_the_weights_device_give_the_same_edit_restore_and_deltas(checkpoint, tmp_path):
    model, tok = load_model(checkpoint["path"])
    before = weights(model)
    on_host = adapterkit.edit(model, tok, REQUESTS, checkpoint["ROME"], evaluate=False)
    edited = weights(model)
    on_host.restore()
    on_device = adapterkit.edit(model, tok, REQUESTS, checkpoint["ROME"], evaluate=False, originals_on="device")
    assert all(torch.equal(p, edited[n]) for n, p in weights(model).items())
    assert sorted(on_device.deltas) == sorted(on_host.deltas) and on_device.deltas
    assert all(torch.equal(on_device.deltas[n], on_host.deltas[n]) for n in on_host.deltas)
    on_device.save(tmp_path / "deltas.safetensors")
    on_device.restore()
    assert all(torch.equal(p, before[n]) for n, p in weights(model).items())
    replayed = adapterkit.apply_deltas(model, tmp_path / "deltas.safetensors")
    assert all(torch.equal(p, edited[n]) for n, p in weights(model).items())
    replayed.restore()
    with pytest.raises(AdapterkitError, match="originals_on='gpu' is not a place") as refused:
        adapterkit.edit(model, tok, REQUESTS, checkpoint["ROME"], evaluate=False, originals_on="gpu")
    assert "'device'" in refused.value.fix
    assert all(torch.equal(p, before[n]) for n, p in weights(model).items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: on the CPU both places are the host")
def test_originals_stay_on_the_gpu_when_asked_and_go_to_the_host_by_default(checkpoint):
    model, tok = load_model(checkpoint["path"], device="cuda")
    before = weights(model)
    for place, kept in (("cpu", {"cpu"}), ("device", {"cuda"})):
        result = adapterkit.edit(model, tok, REQUESTS, checkpoint["ROME"], evaluate=False, originals_on=place)
        assert kept_where(result) == kept, place
        result.restore()
        assert all(torch.equal(p, before[n]) for n, p in weights(model).items())


@pytest.mark.parametrize("method, refused", [("ROME", "model.layers.2.mlp.down_proj.weight"),
                                             ("MEMIT", "model.layers.2.mlp.down_proj.weight")])
def test_an_edit_of_an_offloaded_weight_is_refused_before_any_work(checkpoint, method, refused, tmp_path):
    model, tok = placed(checkpoint)
    hparams = tmp_path / "hparams.yaml"
    import yaml

    settings = yaml.safe_load(checkpoint[method].read_text())
    hparams.write_text(yaml.safe_dump({**settings, "layers": [1, 2]}))
    before = weights(model)
    with pytest.raises(AdapterkitError) as caught:
        adapterkit.edit(model, tok, REQUESTS, hparams, evaluate=False)
    message = str(caught.value)
    assert refused in message and "model.layers.2" in message and "--max-memory" in message
    assert "model.layers.1.mlp.down_proj.weight" not in message.split("fix:")[0]  # the layer in memory is not named
    assert all(torch.equal(p, before[n]) for n, p in weights(model).items())


def test_the_edit_command_refuses_an_offloaded_layer_with_exit_2(checkpoint, tmp_path, capsys):
    from adapterkit.cli import main

    device_map = tmp_path / "map.json"
    device_map.write_text(json.dumps({**LAST_TWO_ON_DISK, "model.layers.1": "disk"}))
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(REQUESTS))
    code = main(["edit", str(checkpoint["path"]), "--hparams", str(checkpoint["ROME"]), "--requests", str(requests),
                 "--device-map", str(device_map), "--offload-folder", str(tmp_path / "offload")])
    err = capsys.readouterr().err
    assert code == 2 and "model.layers.1.mlp.down_proj.weight" in err and "offloaded" in err


def test_a_placement_planned_on_the_meta_device_keeps_the_edited_layers_in_memory(checkpoint, tmp_path):
    from accelerate import init_empty_weights, infer_auto_device_map
    from accelerate.utils import compute_module_sizes
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint["path"]))
    sizes = compute_module_sizes(empty)
    layer = sizes["model.layers.0"]
    # the embedding and two layers, and the room accelerate keeps for loading the largest offloaded layer
    budget = sizes["model.embed_tokens"] + 3 * layer + layer // 2
    planned = infer_auto_device_map(empty, max_memory={"cpu": budget}, no_split_module_classes=empty._no_split_modules)
    assert [planned[f"model.layers.{i}"] for i in range(4)] == ["cpu", "cpu", "disk", "disk"]

    model, tok = placed(checkpoint, device_map=dict(planned))
    assert hooked(model)
    assert model.get_parameter("model.layers.1.mlp.down_proj.weight").device.type == "cpu"
    assert model.get_parameter("model.layers.2.mlp.down_proj.weight").device.type == "meta"
    result = adapterkit.edit(model, tok, REQUESTS, checkpoint["ROME"], evaluate=False)
    assert result.touched == ["model.layers.1.mlp.down_proj.weight"]
    result.restore()

    auto, _ = placed(checkpoint, device_map="auto", max_memory={"cpu": budget})
    assert auto.get_parameter("model.layers.0.mlp.down_proj.weight").device.type == "cpu"
    assert hooked(auto) == is_placed(auto)


def test_placement_requests_are_checked_before_loading(checkpoint):
    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=200GiB") == {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}
    assert parse_max_memory("cuda:2=1000") == {2: 1000}
    for bad in ("0:70GiB", "0=lots", "gpu=1GB", "0=1GB,0=2GB", ""):
        with pytest.raises(AdapterkitError, match="--max-memory"):
            parse_max_memory(bad)
    with pytest.raises(AdapterkitError, match="both place the model"):
        placement_options(device="cpu", device_map="auto")
    with pytest.raises(AdapterkitError, match="only with a device_map"):
        placement_options(max_memory={"cpu": "1GB"})
    with pytest.raises(AdapterkitError, match="offload folder"):
        placement_options(device_map={"": "disk"})


def test_the_commands_take_placement_options_and_refuse_conflicts(checkpoint, tmp_path, capsys):
    from adapterkit.cli import main

    for command in (["stats", str(checkpoint["path"]), "--hparams", str(checkpoint["MEMIT"]), "--corpus", "x.txt"],
                    ["edit", str(checkpoint["path"]), "--hparams", str(checkpoint["ROME"]), "--requests", "r.json"],
                    ["eval", str(checkpoint["path"]), "--hparams", str(checkpoint["ROME"]), "--data", "r.json",
                     "--out", str(tmp_path / "run")],
                    ["trace", str(checkpoint["path"]), "--data", "r.json", "--out", str(tmp_path / "trace")],
                    ["evaluate", str(checkpoint["path"]), "--requests", "r.json"]):
        assert main([*command, "--device", "cpu", "--device-map", "auto"]) == 2
        assert "both place the model" in capsys.readouterr().err
        assert main([*command, "--device-map", "auto", "--max-memory", "cpu=lots"]) == 2
        assert "'lots' is not a size" in capsys.readouterr().err


def test_the_evaluate_alias_measures_a_split_model_as_the_plain_one(checkpoint, tmp_path, capsys):
    from adapterkit.cli import main

    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(REQUESTS))
    deltas = tmp_path / "rome.safetensors"
    assert main(["edit", str(checkpoint["path"]), "--hparams", str(checkpoint["ROME"]), "--requests", str(requests),
                 "--out", str(deltas), "--deltas-only"]) == 0
    capsys.readouterr()
    device_map = tmp_path / "device_map.json"
    device_map.write_text(json.dumps(LAST_TWO_ON_DISK))
    common = ["evaluate", str(checkpoint["path"]), "--requests", str(requests), "--deltas", str(deltas)]
    assert main(common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*common, "--device-map", str(device_map), "--offload-folder", str(tmp_path / "offload")]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split == plain and plain["weights"].startswith("with deltas")


def test_training_an_editor_on_a_spread_model_is_refused_with_exit_2(checkpoint, tmp_path, capsys):
    from adapterkit.cli import main

    records = tmp_path / "train.json"
    records.write_text(json.dumps(REQUESTS))
    hparams = detected_hparams(checkpoint["path"], "MEND", tmp_path / "mend.yaml")
    for flags in (["--device-map", "auto"], ["--device-map", "auto", "--max-memory", "cpu=1GiB"],
                  ["--device-map", "cpu", "--offload-folder", str(tmp_path / "offload")]):
        assert main(["train", str(checkpoint["path"]), "--hparams", str(hparams), "--train", str(records),
                     "--out", str(tmp_path / "editor"), *flags]) == 2
        err = capsys.readouterr().err
        assert "trains an editor on a model held on one device" in err and "--device" in err, err
    assert not (tmp_path / "editor").exists()


def test_the_value_optimisation_steps_aside_on_a_placed_model(checkpoint):
    from adapterkit.editing.values import FastValues, StraightforwardValues, value_optimiser

    model, _ = placed(checkpoint)
    plain, _ = load_model(checkpoint["path"])
    assert isinstance(value_optimiser(model), StraightforwardValues)
    assert isinstance(value_optimiser(plain), FastValues)


def test_causal_tracing_of_a_split_model_finds_what_the_plain_one_finds(fact_models, tmp_path):
    from adapterkit.tracing.trace import TraceSettings, causal_trace

    fact = fact_models("llama")
    fact.model.save_pretrained(tmp_path / "model")
    fact.tok.save_pretrained(tmp_path / "model")
    records = list(fact.facts.trained[:2])
    settings = TraceSettings(samples=3, kinds=("hidden", "mlp"), window=2)
    plain = causal_trace(fact.model, fact.tok, records, settings, progress=False)
    layers = fact.model.config.num_hidden_layers
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk",
                  **{f"model.layers.{i}": "cpu" if i < layers // 2 else "disk" for i in range(layers)}}
    model, tok = load_model(tmp_path / "model", device_map=device_map, offload_folder=tmp_path / "offload")
    assert hooked(model)
    split = causal_trace(model, tok, records, settings, progress=False)
    assert len(split.facts) == len(plain.facts) > 0
    for kind in settings.kinds:
        for token_kind, effects in plain.effects(kind).items():
            assert split.effects(kind)[token_kind] == pytest.approx(effects, abs=1e-5), (kind, token_kind)
