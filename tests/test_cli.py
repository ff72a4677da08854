"""The command line: plugin listing, clear errors with exit code 2 and no traceback, validate."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapterkit.cli import main
from conftest import BUILTIN_ARCHS, BUILTIN_METHODS

REPO = Path(__file__).parents[1]


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "adapterkit", *map(str, args)], capture_output=True, text=True, **kwargs)


def test_plugins_lists_architectures_and_methods_with_distribution_and_version(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    listed = {name for line in out.splitlines() if "architectures: " in line
              for name in line.split("architectures: ", 1)[1].split(", ")}
    assert set(BUILTIN_ARCHS) <= listed
    assert "methods: " + ", ".join(BUILTIN_METHODS) in out
    assert "adapterkit 0.1.0" in out


@pytest.mark.parametrize("setup, expected", [
    (lambda d: None, "no such directory"),
    (lambda d: d.mkdir(), "config.json: missing"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{oops")), "not valid JSON"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "rwkv"}')), "no plugin declares model_type='rwkv'"),
])
def test_detect_errors_exit_2_without_traceback(tmp_path, setup, expected):
    target = tmp_path / "ckpt"
    setup(target)
    proc = run_cli("detect", target)
    assert proc.returncode == 2
    assert expected in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_accepts_detected_hparams_and_reports_json_pointers(tmp_path, capsys):
    good = tmp_path / "rome.yaml"
    assert main(["detect", REPO / "tests/data/chatglm3-6b", "--method", "ROME", "-o", good]) == 0
    assert main(["validate", str(good), "--model", str(REPO / "tests/data/chatglm3-6b")]) == 0
    hparams = yaml.safe_load(good.read_text())
    hparams.update(layers=[40], v_lr="fast", rewrite_module_tmp="transformer.h.{}.mlp.c_proj")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(hparams))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}#/v_lr" in err and "fix:" in err
    hparams["v_lr"] = 0.5
    bad.write_text(yaml.safe_dump(hparams))
    assert main(["validate", str(bad), "--model", str(REPO / "tests/data/chatglm3-6b")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}#/layers/0" in err and f"{bad}#/rewrite_module_tmp" in err


def test_validate_an_easyedit_hparams_file(tmp_path):
    easyedit = {  # the shape of EasyEdit's hparams/ROME/gpt2-xl.yaml, extra keys included
        "alg_name": "ROME", "model_name": "./hugging_cache/gpt2-xl", "stats_dir": "./data/stats", "device": 0,
        "layers": [17], "fact_token": "subject_last", "v_num_grad_steps": 20, "v_lr": 5e-1, "v_loss_layer": 47,
        "v_weight_decay": 0.5, "clamp_norm_factor": 4, "kl_factor": 0.0625, "mom2_adjustment": False,
        "context_template_length_params": [[5, 10], [10, 10]], "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj",
        "layer_module_tmp": "transformer.h.{}", "mlp_module_tmp": "transformer.h.{}.mlp",
        "attn_module_tmp": "transformer.h.{}.attn", "ln_f_module": "transformer.ln_f", "lm_head_module": "transformer.wte",
        "mom2_dataset": "wikipedia", "mom2_n_samples": 100000, "mom2_dtype": "float32", "model_parallel": False, "fp16": False,
    }
    path = tmp_path / "gpt2-xl.yaml"
    path.write_text(yaml.safe_dump(easyedit))
    assert main(["validate", str(path)]) == 0


def test_validate_a_plugin_declaration(tmp_path, capsys):
    assert main(["validate", str(REPO / "examples/adapterkit-starcoder2/adapterkit_starcoder2/starcoder2.yaml")]) == 0
    text = (REPO / "plugins/gptj.yaml").read_text()
    broken = tmp_path / "mine.yaml"
    broken.write_text(text.replace("name: gptj", "name: mine").replace("mlp_out: mlp.fc_out", "mlp_out: mlp.fc_2"))
    assert main(["validate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}#/modules" in err and "transformer.h.{}.mlp.fc_2" in err
    assert f"{broken}#/match/model_types" in err and "'gptj'" in err  # claims gptj like the built-in
