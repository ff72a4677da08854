"""How long the CLI takes to answer `adapterkit plugins`, `detect` (a tiny GPT-2 checkpoint with safetensors
weights) and `validate` (the hyperparameter file detect wrote), and whether torch / transformers were imported to do it.

Each command runs REPEATS times in a fresh interpreter; the fastest run is reported (the least disturbed by other
load on the machine). Run: python benchmarks/bench_cli_startup.py
"""
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5
PROBE = ("import sys, json; from adapterkit.cli import main; code = main(sys.argv[1:]); "
         "print(json.dumps({m: m in sys.modules for m in ('torch', 'transformers')}), file=sys.stderr); sys.exit(code)")


def tiny_checkpoint(directory: Path) -> Path:
    from adapterkit.checkpoints.build import build_model
    from adapterkit.arch.registry import get_registry

    spec = get_registry().architecture("gpt2")
    build_model(spec.tiny_config, spec).save_pretrained(directory)
    return directory


def rome_hparams(checkpoint: Path, path: Path) -> Path:
    from adapterkit.arch.detect import detect, write_yaml

    write_yaml(detect(checkpoint, "ROME"), path)
    return path


def commands(checkpoint: Path, hparams: Path) -> list[tuple[str, list]]:
    return [
        ("plugins", ["plugins"]),
        ("detect --method rome", ["detect", checkpoint, "--method", "rome"]),
        ("detect --method rome --allow-partial-weights", ["detect", checkpoint, "--method", "rome", "--allow-partial-weights"]),
        ("detect --method serac --format easyedit --allow-partial-weights",
         ["detect", checkpoint, "--method", "serac", "--format", "easyedit", "--allow-partial-weights"]),
        ("validate rome.yaml", ["validate", hparams]),
    ]


def measure(args) -> tuple[float, dict]:
    best, imported = float("inf"), {}
    for _ in range(REPEATS):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True)
        best = min(best, time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{args}: exit {proc.returncode}\n{proc.stderr}")
        imported = json.loads(proc.stderr.strip().splitlines()[-1])
    return best, imported


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        checkpoint = tiny_checkpoint(Path(root) / "gpt2")
        hparams = rome_hparams(checkpoint, Path(root) / "rome.yaml")
        python_only = min(_time([sys.executable, "-c", "pass"]) for _ in range(REPEATS))
        print(f"CPU ({platform.machine()}), python {platform.python_version()}; fastest of {REPEATS}; a bare interpreter: {python_only:.2f} s")
        rows = commands(checkpoint, hparams)
        width = max(len(label) for label, _ in rows)
        for label, args in rows:
            seconds, imported = measure(args)
            loaded = ", ".join(m for m, yes in imported.items() if yes) or "neither"
            print(f"adapterkit {label:<{width}} {seconds:5.2f} s   imports torch/transformers: {loaded}")


def _time(command) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
