"""Write an extra pool (.npz) of real training images outside a study's training subsets and hold-outs.

    python tools/make_extra_pool.py --dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist \
        --train-subset 250 --holdout 1000 --seeds 0 1 2 --n 5000 --out runs/recipe_extra_cpu/extra.npz

configs/studies/recipe_extra_cpu.yaml uses such a pool as a stand-in for generated images.
"""

from __future__ import annotations

import argparse

from taylorat import data as datasets
from taylorat.data.extra import write_training_pool


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--data-dir", default="./data")
    ap.add_argument("--train-subset", type=int, default=250)
    ap.add_argument("--holdout", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    ds = datasets.load(a.dataset, a.data_dir, download=False)
    path = write_training_pool(a.out, ds, a.n, a.train_subset, a.holdout, a.seeds)
    print(f"wrote {a.n} images to {path}")


if __name__ == "__main__":
    main()
