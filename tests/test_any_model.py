"""The Taylor loss on models taylorat did not write: timm (a CNN and a ViT) and torchvision, and the trainer
on `model.name: timm:<name>`; the two wrong ways to combine the loss with DDP fail with the right way shown."""

import pytest
import torch
from torch import nn

from taylorat.models import adapt, create
from taylorat.objectives import trades_taylor_from_outputs, trades_taylor_loss

timm = pytest.importorskip("timm")  # taylorat[timm]; part of taylorat[test]


def batch(c=3, s=32, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, s, s, generator=g)
    return x, (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1), torch.randint(0, 10, (n,), generator=g)


def by_hand(features, logits_of, x, x_adv, y):
    """The loss from the model's own logits and its pre-logits features, clean pass first."""
    h, z = features(x), logits_of(x)
    ha, za = features(x_adv), logits_of(x_adv)
    return trades_taylor_from_outputs(z, h, za, ha, y, beta=6.0, eta=0.2).loss


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224"])
def test_timm_models_take_the_taylor_loss(arch):
    torch.manual_seed(0)
    kw = {"img_size": 32} if arch.startswith("vit") else {}
    model = timm.create_model(arch, pretrained=False, num_classes=10, **kw).eval()  # eval: passes independent
    x, x_adv, y = batch()
    ours = trades_taylor_loss(model, x, x_adv, y, beta=6.0, eta=0.2)
    feats = lambda t: model.forward_head(model.forward_features(t), pre_logits=True)  # noqa: E731
    torch.testing.assert_close(ours, by_hand(feats, model, x, x_adv, y), rtol=1e-5, atol=1e-6)
    assert adapt(model).head is model.get_classifier()


def test_torchvision_resnet18_takes_the_taylor_loss():
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tv.resnet18(num_classes=10).eval()
    x, x_adv, y = batch()
    ours = trades_taylor_loss(model, x, x_adv, y)
    body = nn.Sequential(*list(model.children())[:-1], nn.Flatten())  # everything before model.fc
    torch.testing.assert_close(ours, by_hand(body, model, x, x_adv, y), rtol=1e-5, atol=1e-6)
    assert adapt(model).head is model.fc  # found by probing, not by its name


def test_a_model_without_a_final_linear_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10), nn.Softmax(dim=1))
    x, x_adv, y = batch(s=8)
    with pytest.raises(ValueError, match="no nn.Linear of Sequential produces its output"):
        trades_taylor_loss(model, x, x_adv, y)


def test_trainer_takes_a_timm_model(tmp_path):
    from taylorat import checkpoint as ckpt
    from taylorat.train import from_dict, train

    cfg = from_dict({"out_dir": str(tmp_path / "run"), "device": "cpu", "progress": False, "checkpoints": "none",
                     "curves": False, "model": {"name": "timm:resnet18"},
                     "data": {"dataset": "synthetic", "holdout": 10,
                              "options": {"n_train": 26, "n_test": 10, "channels": 3, "image_size": 16}},
                     "attack": {"eps": 0.03, "step": 0.01, "steps": 1}, "optim": {"epochs": 1, "batch_size": 16},
                     "eval": {"n": 10, "eps": 0.03, "step": 0.01, "steps": 1}})
    assert train(cfg, log=lambda s: None).epochs_done == 1
    model, meta = ckpt.load_model(tmp_path / "run" / "best.safetensors")  # rebuilt from its spec
    assert meta["model"]["name"] == "timm:resnet18" and model(torch.rand(1, 3, 16, 16)).shape == (1, 10)
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'; did you mean"):
        from_dict({"model": {"name": "timm:resnet1800"}})


@pytest.mark.xdist_group("torchrun")  # a process group on a fixed port: beside the torchrun tests, not in parallel
def test_a_ddp_wrapped_model_is_refused_with_the_right_way_shown(tmp_path):
    import gc
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = create("small_cnn", num_classes=10, in_channels=1, image_size=8)
        x, x_adv, y = batch(c=1, s=8)
        with pytest.raises(ValueError, match=r"wrap taylorat.objectives.PairForward\(model\) in DDP"):
            trades_taylor_loss(DDP(model), x, x_adv, y)
    finally:
        gc.collect()  # the refused DDP wrapper holds the group: free it first
        dist.destroy_process_group()
