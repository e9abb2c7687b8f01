"""airbench94 in PyTorch, as cifarnet builds it: the twin the parity check and the time
comparison run (NCHW, GELU's tanh form, batch norms with the scale fixed at 1).

Written from the paper and the published script's description (Jordan 2024), in PyTorch's own
idiom; only imported where torch is importable, never a dependency of cifarnet.
"""
from __future__ import annotations

import numpy as np


def build(widths=(64, 256, 256), num_classes: int = 10, bn_momentum: float = 0.4):
    """The network as a ``torch.nn.Sequential`` whose modules are named like cifarnet's layers
    (``whiten``, ``group1_conv1``, ``group1_norm1``, ..., ``head``), so weights copy by name."""
    import torch
    from torch import nn

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    def norm(c):
        layer = nn.BatchNorm2d(c, eps=1e-12, momentum=bn_momentum)
        layer.weight.requires_grad_(False)                 # the scale stays 1
        return layer

    layers = [("whiten", nn.Conv2d(3, 24, 2, bias=True)), ("whiten_gelu", nn.GELU(approximate="tanh"))]
    c_in = 24
    for g, width in enumerate(widths, start=1):
        layers += [(f"group{g}_conv1", nn.Conv2d(c_in, width, 3, padding=1, bias=False)),
                   (f"group{g}_pool", nn.MaxPool2d(2)), (f"group{g}_norm1", norm(width)),
                   (f"group{g}_gelu1", nn.GELU(approximate="tanh")),
                   (f"group{g}_conv2", nn.Conv2d(width, width, 3, padding=1, bias=False)),
                   (f"group{g}_norm2", norm(width)), (f"group{g}_gelu2", nn.GELU(approximate="tanh"))]
        c_in = width
    layers += [("pool", nn.MaxPool2d(3)), ("flatten", nn.Flatten()),
               ("head", nn.Linear(c_in, num_classes, bias=False)), ("logit_scale", Scale(1 / 9))]
    from collections import OrderedDict

    net = nn.Sequential(OrderedDict(layers))
    net.whiten.weight.requires_grad_(False)                # fitted to data, never trained
    with torch.no_grad():                                  # airbench's init: PyTorch's, then identity filters
        net.whiten.bias.zero_()
        for name, module in net.named_children():
            if name.endswith(("conv1", "conv2")):
                nn.init.dirac_(module.weight[:module.in_channels])
    return net.to(torch.float64)


def whitening_weights(images_nchw, kernel: int = 2, eps: float = 5e-4):
    """The whitening filters ``(2*k*k*C, C, k, k)`` from images ``(N, C, H, W)``: the eigenvectors
    of the patches' second moments over ``sqrt(eigenvalue + eps)``, largest first, then negated."""
    import torch

    n, c = images_nchw.shape[:2]
    patches = images_nchw.unfold(2, kernel, 1).unfold(3, kernel, 1)      # N, C, H', W', k, k
    rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    values, vectors = torch.linalg.eigh(rows.T @ rows / rows.shape[0])
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors / torch.sqrt(values + eps)).T.reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters])


def copy_from_cifarnet(net, model) -> None:
    """Every parameter and buffer of cifarnet's ``model`` into ``net`` by name (NHWC/HWIO ->
    NCHW/OIHW, linear transposed); the fixed scales (``gamma``) go to the batch norms' weights."""
    import torch

    names = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias", "running_mean": "running_mean",
             "running_var": "running_var"}
    theirs = dict(net.state_dict())
    mine = model.state_dict()
    with torch.no_grad():
        for key, value in mine.items():
            layer, array = key.rsplit(".", 1)
            target = f"{layer}.{names[array]}"
            value = np.asarray(value, dtype=np.float64)
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:
                value = value.T
            theirs[target].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def optimizer(net, batch: int = 1024, lr: float = 11.5, momentum: float = 0.85, weight_decay: float = 0.0153):
    """airbench's optimizer for ``net``: Nesterov SGD with its decoupled hyper-parameters turned into
    PyTorch's (lr / d, weight decay * batch / d, d = 1024 (1 + 1 / (1 - momentum))), batch-norm
    shifts at 64x the learning rate with the same absolute decay."""
    import torch

    d = 1024 * (1 + 1 / (1 - momentum))
    lr, decay = lr / d, weight_decay * batch / d
    norms = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    return torch.optim.SGD([{"params": norms, "lr": 64 * lr, "weight_decay": decay / (64 * lr)},
                            {"params": others, "lr": lr, "weight_decay": decay / lr}], momentum=momentum, nesterov=True)


def train(args, cfg: dict) -> dict:
    """airbench's recipe (the composed config of ``+experiment=airbench94``, ``cfg``) in PyTorch on
    cifarnet's batches (the same order, translations, alternating flips and normalisation as
    ``python -m cifarnet +experiment=airbench94 seed=<seed>``), float32, channels-last; whitening
    from the first 5,000 training images, lookahead, the whitening bias frozen after 3 epochs, the
    final evaluation with 6-view test-time augmentation. Writes the per-epoch CSV (``args.out``)
    and a JSON summary beside it (accuracy with and without TTA, time to result as airbench counts
    it); returns the summary."""
    import csv
    import json
    import math
    import time

    import torch

    from ..data import Augmentation, BatchLoader, load_dataset
    from ..experiment.components import normalization_for
    from ..schedules import make_lr_schedule
    from ..schedules.lr import total_steps

    t, d, o = cfg["trainer"], cfg["data"], cfg["optimizer"]
    torch.manual_seed(args.seed)
    data = load_dataset("cifar10", root=args.root, download=False)
    norm = normalization_for(d, data)
    aug = d["augment"]
    augmentation = Augmentation(aug["crop_padding"], aug["pad_mode"], aug["flip"], aug["alternate_flip"])
    loader = BatchLoader(data.train, d["batch_size"], norm, shuffle=True, drop_last=True, seed=args.seed,
                         augmentation=augmentation)
    test = BatchLoader(data.test, 2000, norm)
    device = torch.device(getattr(args, "device", "cpu"))
    channels_last = lambda x: torch.from_numpy(x).to(device).permute(0, 3, 1, 2)  # noqa: E731 - NHWC is channels-last
    net = build().float().to(device, memory_format=torch.channels_last)
    started = time.perf_counter()
    with torch.no_grad():
        first = channels_last(norm(data.train.images[:cfg["model"].get("fit_images") or 5000]))
        net.whiten.weight.copy_(whitening_weights(first.double()).float())
    init_seconds = time.perf_counter() - started
    opt = optimizer(net, d["batch_size"], o["lr"], o["momentum"], o["weight_decay"])
    initial = [g["lr"] for g in opt.param_groups]
    total = total_steps(t["epochs"], len(loader))
    factor = make_lr_schedule("piecewise", 1.0, t["epochs"], len(loader), knots=cfg["schedule"]["knots"])
    average = {k: v.clone() for k, v in net.state_dict().items()}
    frozen_after = next(g["frozen_after_epochs"] for g in o["groups"] if g.get("match") == "whiten.b")
    step, rows, training_seconds = 0, [], 0.0
    for epoch in range(math.ceil(round(t["epochs"], 6))):
        net.whiten.bias.requires_grad_(epoch < frozen_after)
        net.train()
        tick, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in loader.epoch(epoch, stop_batch=min(len(loader), total - epoch * len(loader))):
            for group, start in zip(opt.param_groups, initial, strict=True):
                group["lr"] = start * factor(step)
            labels = torch.from_numpy(y).to(device)
            logits = net(channels_last(x))
            loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=t["label_smoothing"],
                                                     reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % t["ema_every"] == 0:
                lookahead(net, average, t["ema_decay"] * (step / total) ** t["ema_power"])
            if step >= total:
                lookahead(net, average, 1.0)                      # the weights end as the average
            loss_sum += loss.item()
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(y)
        seconds = time.perf_counter() - tick
        training_seconds += seconds
        accuracy, test_loss = evaluate_torch(net, test, channels_last, tta=0)
        rows.append([epoch + 1, loss_sum / seen, correct / seen, test_loss, accuracy, round(seconds, 1)])
        print(f"epoch {epoch + 1}/{t['epochs']:g}  train loss {rows[-1][1]:.4f} acc {rows[-1][2]:.2%}  "
              f"test acc {accuracy:.2%}  {seconds:.1f} s", flush=True)
    tick = time.perf_counter()
    tta_accuracy, _ = evaluate_torch(net, test, channels_last, tta=cfg["eval"]["tta"])
    final_seconds = time.perf_counter() - tick
    summary = {"seed": args.seed, "steps": step, "test_acc": rows[-1][4], "test_acc_tta": tta_accuracy,
               "tta": cfg["eval"]["tta"], "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "time": {"data_init_seconds": round(init_seconds, 3), "training_seconds": round(training_seconds, 3),
                        "final_evaluation_seconds": round(final_seconds, 3),
                        "total_seconds": round(init_seconds + training_seconds + final_seconds, 3)}}
    print(f"final: test accuracy {tta_accuracy:.2%} with TTA level {cfg['eval']['tta']}, {rows[-1][4]:.2%} without; "
          f"time to result {summary['time']['total_seconds']:.1f} s", flush=True)
    with open(args.out, "w", newline="") as f:                # torch_train's columns
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"])
        writer.writerows(rows)
    with open(str(args.out).rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def lookahead(net, average: dict, decay: float) -> None:
    """airbench's lookahead update: the average moves toward the weights by ``1 - decay``, then the
    weights are set to it (floating-point entries of the state: weights and batch-norm statistics)."""
    import torch

    with torch.no_grad():
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                average[key].lerp_(value, 1 - decay)
                value.copy_(average[key])


def evaluate_torch(net, loader, to_torch, tta: int) -> tuple[float, float]:
    """Test accuracy and mean loss of ``net`` in eval mode, with test-time augmentation ``tta``."""
    import torch

    net.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader.epoch(0):
            images = to_torch(x)
            if tta == 2:
                logits = torch_tta(net, images)
            elif tta == 1:
                logits = 0.5 * net(images) + 0.5 * net(images.flip(-1))
            else:
                logits = net(images)
            labels = torch.from_numpy(y).to(logits.device)
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            n += len(y)
    return correct / n, loss / n


def torch_tta(net, x):
    """airbench's level-2 test-time augmentation on NCHW images: the mirror average of the image,
    and of it translated by one pixel each way (reflect-padded), half and half."""
    import torch

    def mirror(v):
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))

    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[2:]
    shifted = [padded[:, :, 0:h, 0:w], padded[:, :, 2:h + 2, 2:w + 2]]
    return 0.5 * mirror(x) + 0.5 * torch.stack([mirror(v) for v in shifted]).mean(0)
