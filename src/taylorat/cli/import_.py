"""``taylorat import``: a ``torch.save`` state dict (e.g. the reference code's) to a safetensors checkpoint."""

from __future__ import annotations

import argparse

from .. import checkpoint as ckpt
from .. import models
from ..models import layouts
from .shared import add_file_argument, file_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    im = subparsers.add_parser("import", help="convert a torch.save state dict (e.g. the reference code's) to a "
                                              "safetensors checkpoint")
    add_file_argument(im, "file", "a .pt/.pth state dict")
    im.add_argument("--model", required=True, help="architecture, e.g. wrn_34_10")
    im.add_argument("--num-classes", type=int, default=10, help="classes of the model's head (default 10)")
    im.add_argument("--in-channels", type=int, default=3, help="input channels (default 3; 1 for MNIST-like data)")
    im.add_argument("--image-size", type=int, default=32, help="input height and width (default 32)")
    im.add_argument("--dataset", help="recorded so that taylorat eval knows the data (e.g. cifar10)")
    im.add_argument("--out", required=True, help="the .safetensors file to write")
    im.add_argument("--allow-pickle", action="store_true",
                    help="required: read the pickle with torch.load(weights_only=True), tensors only")
    im.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.file = file_argument(args, "file")
    state = ckpt.read_pickled_state(args.file, allow_pickle=args.allow_pickle)
    norm = layouts.normalization(state)
    kw = {"mean": norm[0], "std": norm[1]} if norm else {}
    model = models.create(args.model, num_classes=args.num_classes, in_channels=args.in_channels,
                          image_size=args.image_size, **kw)
    dropped = ckpt.load_foreign_state(model, state, str(args.file))
    meta = {"imported_from": str(args.file), "dropped_unused": dropped}
    if args.dataset:
        meta["config"] = {"data": {"dataset": args.dataset}}
    ckpt.save_model(args.out, model, meta)
    print(f"{args.file} -> {args.out} ({args.model}, {sum(p.numel() for p in model.parameters()):,} parameters"
          + (", input normalization inside the model" if norm else "")
          + (f"; dropped {len(dropped)} keys of layers the source builds but never uses ({dropped[0]}, ...)"
             if dropped else "") + ")")
    return 0
