"""part_d2's linear layer (``part_d2.modeling.onednn.linear``) against ``F.linear``.

The products of part_d2's Mask2Former at the benchmark's sizes (deformable encoder over a 400x600
image: 5187 tokens; decoder: 100 queries), forward alone and forward + backward, timed in
alternation on identical seeded inputs. Quality: the largest difference from ``F.linear``'s
output relative to its largest magnitude (float tolerance ~1e-6). Where oneDNN is missing or a
product is below ``MIN_MACS`` the function is ``F.linear`` itself and the ratio is ~1.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from common import check_device, interleaved_median_times, ratio_row, scaled

from part_d2.modeling.onednn import MIN_MACS, linear, onednn_available

# (rows, in, out): encoder FFN, encoder projections, decoder FFN, decoder projections
SHAPES = [(5187, 256, 1024), (5187, 1024, 256), (5187, 256, 256), (100, 256, 2048), (100, 256, 256)]
TARGET_RATIO = 1.0  # never slower than F.linear


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, iters: int = 20) -> dict:
    check_device(device)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for m, k, n in SHAPES:
        m = scaled(m, scale, 16)
        x = torch.randn(m, k, generator=gen).to(device).requires_grad_()
        w = torch.randn(n, k, generator=gen).div_(k ** 0.5).to(device).requires_grad_()
        b = torch.randn(n, generator=gen).to(device).requires_grad_()
        with torch.no_grad():
            ref, ours = F.linear(x, w, b), linear(x, w, b)
        rel = ((ours - ref).abs().max() / ref.abs().max()).item()
        quality = f"max |difference| / max |F.linear| = {rel:.1e}"

        def both(fn):
            def step():
                fn(x, w, b).sum().backward()
            return step

        def forward(fn):
            def step():
                with torch.no_grad():
                    fn(x, w, b)
            return step

        for label, wrap in (("forward", forward), ("forward + backward", both)):
            times = interleaved_median_times({"F.linear": wrap(F.linear), "part_d2": wrap(linear)}, iters, device)
            rows.append(ratio_row(f"{label}, ({m} x {k}) @ ({k} x {n})", "s", times["F.linear"], times["part_d2"],
                                  TARGET_RATIO, quality, rel <= 1e-5))
    return {
        "case": "linear",
        "title": "Linear layers: oneDNN products vs F.linear",
        "params": {"shapes": SHAPES, "iters": iters, "device": device, "seed": seed, "min_macs": MIN_MACS,
                   "onednn": onednn_available(), "torch_threads": torch.get_num_threads()},
        "rows": rows,
        "notes": ["medians of alternating runs; part_d2 uses oneDNN for CPU float32 products of at least "
                  f"{MIN_MACS} multiply-adds" + ("" if onednn_available() else " (not available here: F.linear)")],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    result = run(args.scale, args.device, iters=args.iters)
    for row in result["rows"]:
        print(f"{row['metric']}: F.linear {row['baseline'] * 1e3:.2f} ms, part_d2 {row['part_d2'] * 1e3:.2f} ms, "
              f"ratio {row['value']:.2f} ({row['quality']})")
    print(json.dumps(result["params"]))


if __name__ == "__main__":
    main()
