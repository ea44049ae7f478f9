"""What the checkpoint checksum costs: save and load of a WRN-34-10 checkpoint, with and without the CRC-32.

    python benchmarks/checksum_cost.py [--model wrn_34_10] [--repeats 3]

"with" is ``checkpoint.save`` / ``checkpoint.load`` as taylorat runs them; "without" writes the same file
with safetensors alone and loads it skipping the verification. Best of ``--repeats`` (CPU, page cache warm).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from taylorat import checkpoint as ckpt
from taylorat import models
from taylorat.common import atomic_write_bytes


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wrn_34_10")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = models.create(args.model, num_classes=10)
    tensors, meta = ckpt.model_tensors(model), {"kind": "model", "model": model.spec}
    with tempfile.TemporaryDirectory() as tmp:
        with_sum, without = Path(tmp) / "with.safetensors", Path(tmp) / "without.safetensors"

        def save_plain():
            flat = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
            header = {"format": ckpt.FORMAT, "version": ckpt.VERSION, **meta}
            atomic_write_bytes(without, st_save(flat, metadata={"taylorat": json.dumps(header)}))

        save_with = best_of(args.repeats, lambda: ckpt.save(with_sum, tensors, meta))
        save_without = best_of(args.repeats, save_plain)
        load_with = best_of(args.repeats, lambda: ckpt.load(with_sum))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ckpt.UnverifiedCheckpoint)
            load_without = best_of(args.repeats, lambda: ckpt.load(without))
        raw = with_sum.read_bytes()
        crc = best_of(args.repeats, lambda: zlib.crc32(raw))
        mb = with_sum.stat().st_size / 2**20
    print(f"{args.model}: {mb:.0f} MiB checkpoint, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"save: {save_without:.3f} s without checksum, {save_with:.3f} s with (+{save_with - save_without:.3f} s)")
    print(f"load: {load_without:.3f} s without checksum, {load_with:.3f} s with (+{load_with - load_without:.3f} s)")
    print(f"crc32 alone: {crc:.3f} s ({mb / crc:.0f} MiB/s)")


if __name__ == "__main__":
    main()
