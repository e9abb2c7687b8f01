"""airbench94 in cifarnet against its PyTorch twin, in float64: the whitening filters (up to each
filter's sign), the training-mode forward, the summed label-smoothed loss, every gradient and
the batch norms' running statistics after the step; then three optimizer steps of airbench's
(decoupled Nesterov SGD, batch-norm shifts at 64x the learning rate, the whitening bias frozen
at the third) against PyTorch's SGD with airbench's parameter groups: the change they made to
every weight; then a lookahead update (``d = 0.95^5 (3/10)^3``) of the weights and statistics
against airbench's (``lerp_`` then ``copy_``); last, the eval-mode logits with test-time
augmentation levels 0, 1 and 2 (cifarnet's fused inference plan against the twin's views).

    python -m cifarnet.bench.parity                      # the full widths, batch 8
    python -m cifarnet.bench.parity --widths 16 32 32 --batch 4

Prints one line per quantity with its relative error ``max |cifarnet - torch| / max |torch|`` and
exits 1 if any is above ``--tolerance`` (1e-8). Needs torch (another environment:
``PYTHONPATH=<checkout> python -m cifarnet.bench.parity``).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ..inference import InferencePlan, infer
from ..inference.tta import tta_logits
from ..layers import TRAIN
from ..losses import SoftmaxCrossEntropy
from ..models import build_model, fit_to_data, model_description
from ..optim import SGD
from ..training.average import WeightAverage
from .torch_airbench import build, copy_from_cifarnet, optimizer, torch_tta, whitening_weights


def relative(mine, theirs) -> float:
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(mine - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def to_torch_layout(name: str, value: np.ndarray) -> np.ndarray:
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 else value


def compare(widths, batch: int, seed: int, smoothing: float = 0.2) -> dict[str, float]:
    """Relative errors by quantity (see the module docstring)."""
    import torch

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 32, 32, 3)) * 0.8 + 0.1
    labels = rng.integers(0, 10, batch)
    model = build_model(model_description("airbench94", widths=list(widths)), seed=seed, dtype=np.float64)
    fit_to_data(model, images)
    net = build(widths)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    errors = {}

    filters = whitening_weights(x).numpy()                              # (24, 3, 2, 2)
    mine = model["whiten"].buffers["W"].transpose(3, 2, 0, 1)
    signs = np.sign(np.einsum("oihw,oihw->o", mine, filters))[:, None, None, None]
    errors["whitening filters (up to sign)"] = relative(mine * signs, filters)

    copy_from_cifarnet(net, model)
    net.train()
    logits_t = net(x)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels), label_smoothing=smoothing,
                                               reduction="sum")
    loss_t.backward()
    loss_fn = SoftmaxCrossEntropy(smoothing)
    logits, ctx = model.forward(images, TRAIN)
    loss, loss_ctx = loss_fn.forward(logits, labels)
    _, grads = model.backward(ctx, loss_fn.backward(loss_ctx) * batch, need_dx=False)   # mean -> summed loss
    errors["logits"] = relative(logits, logits_t.detach().numpy())
    errors["summed loss"] = relative(float(loss) * batch, loss_t.item())
    theirs = dict(net.named_parameters())
    for name, grad in grads.items():
        layer, array = name.rsplit(".", 1)
        torch_name = f"{layer}.{'weight' if array == 'W' else 'bias'}"
        errors[f"gradient {name}"] = relative(to_torch_layout(name, grad), theirs[torch_name].grad.numpy())
    buffers = dict(net.named_buffers())
    for name, value in model.named_buffers():
        layer, array = name.rsplit(".", 1)
        if array.startswith("running"):
            errors[f"after the step: {name}"] = relative(value, buffers[name].numpy())
    errors.update(after_steps(model, net, rng, batch, smoothing))
    errors.update(tta_errors(model, net, images))
    return errors


def tta_errors(model, net, images) -> dict[str, float]:
    """Eval-mode logits with each test-time augmentation level, cifarnet's plan against the twin."""
    import torch

    net.eval()
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        theirs = {0: net(x), 1: 0.5 * net(x) + 0.5 * net(x.flip(-1)), 2: torch_tta(net, x)}
    errors = {}
    for level in (0, 1, 2):
        mine = evaluate_logits(model, images, level)
        errors[f"eval-mode logits, test-time augmentation level {level}"] = relative(mine, theirs[level].numpy())
    return errors


def evaluate_logits(model, images, level: int):
    """cifarnet's logits as evaluation computes them (the fused plan, the TTA views)."""
    plan = InferencePlan(model)
    return tta_logits(lambda view: infer(plan, view, workers=1), images, level)


AIRBENCH_GROUPS = [{"kind": "batchnorm", "lr_scale": 64.0}, {"match": "whiten.b", "frozen_after_epochs": 2}]


def after_steps(model, net, rng, batch: int, smoothing: float, steps=((0.2, 0), (0.6, 1), (1.0, 2))):
    """Both frameworks take the same optimizer steps (schedule factor, epoch) on the same batches."""
    import torch

    lr, momentum, wd, kilo_batch = 11.5, 0.85, 0.0153, 1024
    opt = SGD(lr=lr, momentum=momentum, nesterov=True, weight_decay=wd, decoupled=True, groups=AIRBENCH_GROUPS)
    opt.batch_size = kilo_batch
    torch_opt = optimizer(net, kilo_batch, lr, momentum, wd)                # airbench's groups, in PyTorch's terms
    initial = [g["lr"] for g in torch_opt.param_groups]
    before = {name: value.copy() for name, value in model.named_parameters()}
    average = WeightAverage(5, 0.95 ** 5, 3.0, True, total_steps=10)
    average.start(model)
    torch_average = {k: v.clone() for k, v in net.state_dict().items()}
    loss_fn = SoftmaxCrossEntropy(smoothing, "sum")
    for factor, epoch in steps:
        images, labels = rng.standard_normal((batch, 32, 32, 3)), rng.integers(0, 10, batch)
        logits, ctx = model.forward(images, TRAIN)
        _, loss_ctx = loss_fn.forward(logits, labels)
        _, grads = model.backward(ctx, loss_fn.backward(loss_ctx), need_dx=False)
        opt.lr, opt.epoch = lr * factor, epoch
        opt.step(model, grads)
        net.whiten.bias.requires_grad_(epoch < 2)
        for group, start in zip(torch_opt.param_groups, initial, strict=True):
            group["lr"] = start * factor
        torch_opt.zero_grad(set_to_none=True)
        out = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        torch.nn.functional.cross_entropy(out, torch.from_numpy(labels), label_smoothing=smoothing,
                                          reduction="sum").backward()
        torch_opt.step()
    theirs = dict(net.state_dict())
    names = {"W": "weight", "b": "bias", "beta": "bias"}
    errors = {}
    for name, value in model.named_parameters():                      # the change the steps made
        layer, array = name.rsplit(".", 1)
        start = to_torch_layout(name, before[name])
        errors[f"{len(steps)} SGD steps, change of {name}"] = relative(
            to_torch_layout(name, value) - start, theirs[f"{layer}.{names[array]}"].numpy() - start)
    d = average.factor(len(steps))                                     # a lookahead update after them
    average.update(model, d)
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                torch_average[key].lerp_(value, 1 - d)
                value.copy_(torch_average[key])
    theirs = dict(net.state_dict())
    names.update(running_mean="running_mean", running_var="running_var")
    for name, value in [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if "running" in n)]:
        layer, array = name.rsplit(".", 1)
        errors[f"lookahead update: {name}"] = relative(to_torch_layout(name, value),
                                                       theirs[f"{layer}.{names[array]}"].numpy())
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.parity", description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs=3, default=[64, 256, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-8)
    args = parser.parse_args(argv)
    errors = compare(args.widths, args.batch, args.seed)
    worst = max(errors.values())
    for name, error in errors.items():
        print(f"{error:9.2e}  {name}")
    print(f"worst {worst:.2e} over {len(errors)} quantities (tolerance {args.tolerance:g}): "
          f"{'PASS' if worst <= args.tolerance else 'FAIL'}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
