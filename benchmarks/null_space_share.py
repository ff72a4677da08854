"""How much of the preserved knowledge AlphaEdit's null space holds, per layer, from a statistics folder: the
directions whose eigenvalue of the keys' second moment (mean k k^T) lies below each threshold, and the share of
the moment's trace (the preserved keys' energy) in them. A true null space holds almost none of it; where it holds
much, updates there move what the statistics preserve. Also the threshold that keeps the share under 1 % / 2 % / 5 %.
benchmarks/RESULTS.md ("AlphaEdit's null space on SmolLM2") holds what this printed.
Run: python benchmarks/null_space_share.py STATS_FOLDER [--thresholds 0.02 0.005]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch


def spectrum(path: Path) -> torch.Tensor:
    data = np.load(path)
    moment = torch.from_numpy(np.asarray(data["mom2.mom2"], dtype=np.float64)) / float(data["mom2.count"])
    return torch.linalg.eigvalsh(moment)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.02, 0.005])
    args = parser.parse_args()
    files = sorted(Path(args.folder).rglob("*_mom2_*.npz"))
    if not files:
        raise SystemExit(f"{args.folder}: no statistics files (*_mom2_*.npz) in it")
    for path in files:
        values = spectrum(path)
        share = torch.cumsum(values, 0) / values.sum()
        row = {"file": path.name, "width": len(values), "eigenvalue_min": values[0].item(),
               "eigenvalue_median": values[len(values) // 2].item(), "eigenvalue_max": values[-1].item()}
        for threshold in args.thresholds:
            inside = values < threshold
            row[f"below {threshold:g}"] = {"directions": int(inside.sum()),
                                           "share": (values[inside].sum() / values.sum()).item()}
        for target in (0.01, 0.02, 0.05):
            kept = int((share < target).sum())
            row[f"under {target:.0%}"] = {"directions": kept, "threshold": values[kept].item()}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
