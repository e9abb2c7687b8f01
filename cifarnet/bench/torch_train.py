"""Train the equivalent PyTorch model on the same batches as cifarnet, for accuracy comparisons.

    python -m cifarnet.bench.torch_train --model simplecnn --epochs 20 --out torch_simplecnn.csv
    python -m cifarnet.bench.torch_train --model simplecnn --init cifarnet --pad-mode reflect ...
    python -m cifarnet.bench.torch_train --model resnet32 --device cuda --batch 128 --lr 0.1 --nesterov \
        --weight-decay 5e-4 --no-decay-norm-bias --schedule cosine --warmup-epochs 1 --label-smoothing 0.1 \
        --dropout 0 --epochs 40 --out torch_resnet32_fast.csv      # the resnet32_fast recipe

The learning rate follows cifarnet's own schedules (the same step-by-step values). The batches
come from cifarnet's own pipeline (:class:`cifarnet.data.BatchLoader`, the same seed,
order, crops, flips and normalisation as ``python -m cifarnet`` with the same settings), so a
difference in accuracy is the frameworks' (initialisation, arithmetic, dropout masks), not the
data's. ``--init pytorch`` keeps PyTorch's default initialisation; ``--init cifarnet`` copies the
initial weights of cifarnet's model built with the same seed (and ``--cifarnet-init`` scheme).
Writes one CSV row per epoch: epoch, train_loss, train_acc, test_loss, test_acc, seconds.

Needs ``torch`` (never a dependency of cifarnet: install it in another environment).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time

import numpy as np

from ..data import Augmentation, BatchLoader, Normalization, load_dataset
from ..models import build_model, model_description
from ..schedules import make_lr_schedule
from .torch_reference import build


def copy_initial_weights(torch_model, model) -> None:
    """Put cifarnet's weights into the equivalent PyTorch model (NHWC/HWIO -> NCHW/OIHW), in the
    order both enumerate their parameters."""
    import torch

    ours = [(name, a) for name, a in model.named_parameters()]
    theirs = [p for p in torch_model.parameters()]
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} cifarnet parameters against {len(theirs)} PyTorch ones")
    with torch.no_grad():
        for (name, a), p in zip(ours, theirs, strict=True):
            value = np.asarray(a)
            if value.ndim == 4:                                  # conv: (KH, KW, C_in, C_out) -> (C_out, C_in, KH, KW)
                value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:
                value = value.T                                  # linear: (D_in, D_out) -> (D_out, D_in)
            if tuple(p.shape) != value.shape:
                raise ValueError(f"{name}: cifarnet {value.shape} against PyTorch {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def flatten_order_fix(torch_model, model, image_shape) -> None:
    """cifarnet flattens NHWC images in (H, W, C) order, PyTorch NCHW ones in (C, H, W): permute
    the input columns of the linear layer after a flatten so both compute the same."""
    import torch

    from ..layers import Flatten

    shape = tuple(image_shape)
    for layer in model.children.values():
        if isinstance(layer, Flatten):
            break
        shape = layer.output_shape(shape)
    else:
        return
    h, w, c = shape
    layers = list(torch_model)
    for i, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Flatten) and i + 1 < len(layers) and isinstance(layers[i + 1], torch.nn.Linear):
            fc = layers[i + 1]
            with torch.no_grad():
                weight = fc.weight.reshape(fc.out_features, h, w, c).permute(0, 3, 1, 2).reshape(fc.out_features, -1)
                fc.weight.copy_(weight)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.torch_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplecnn")
    parser.add_argument("--root", default="data")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--no-decay-norm-bias", action="store_true", help="no weight decay on biases and BN")
    parser.add_argument("--nesterov", action="store_true")
    parser.add_argument("--schedule", default="constant", choices=["constant", "cosine", "step", "linear"])
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, help="the model's dropout rate (default: cifarnet's preset)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--pad-mode", default="zero", choices=["zero", "reflect"])
    parser.add_argument("--init", default="pytorch", choices=["pytorch", "cifarnet"])
    parser.add_argument("--cifarnet-init", default="he_normal", help="cifarnet's scheme for --init cifarnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--out", required=True, help="CSV file for the per-epoch metrics")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("cifar10", root=args.root, download=False)
    norm = Normalization.from_images(data.train.images)
    train = BatchLoader(data.train, args.batch, norm, augmentation=Augmentation(4, args.pad_mode, True), shuffle=True,
                        drop_last=True, seed=args.seed)
    test = BatchLoader(data.test, 500, norm)
    net = build(args.model, args.dropout)
    if args.init == "cifarnet":
        ours = build_model(model_description(args.model, init=args.cifarnet_init), data.image_shape, seed=args.seed)
        copy_initial_weights(net, ours)
        flatten_order_fix(net, ours, data.image_shape)
    device = torch.device(args.device)
    net.to(device)
    decayed = [p for p in net.parameters() if p.ndim > 1 or not args.no_decay_norm_bias]
    exempt = [p for p in net.parameters() if p.ndim <= 1 and args.no_decay_norm_bias]
    groups = [{"params": decayed, "weight_decay": args.weight_decay}] + ([{"params": exempt, "weight_decay": 0.0}]
                                                                        if exempt else [])
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    lr_at = make_lr_schedule(args.schedule, args.lr, args.epochs, len(train),
                             **({"warmup_epochs": args.warmup_epochs} if args.warmup_epochs else {}))
    to_torch = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)  # noqa: E731
    labels = lambda y: torch.from_numpy(y).to(device)                                               # noqa: E731
    step = 0
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"])
        for epoch in range(args.epochs):
            start, total, correct, seen = time.perf_counter(), 0.0, 0, 0
            net.train()
            for x, y in train.epoch(epoch):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                logits = net(to_torch(x))
                loss = torch.nn.functional.cross_entropy(logits, labels(y), label_smoothing=args.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += loss.item() * len(y)
                correct += int((logits.argmax(1).cpu().numpy() == y).sum())
                seen += len(y)
            net.eval()
            test_loss, test_correct = 0.0, 0
            with torch.no_grad():
                for x, y in test.epoch(0):
                    logits = net(to_torch(x))
                    test_loss += float(torch.nn.functional.cross_entropy(logits, labels(y))) * len(y)
                    test_correct += int((logits.argmax(1).cpu().numpy() == y).sum())
            n_test = len(data.test)
            row = [epoch + 1, total / seen, correct / seen, test_loss / n_test, test_correct / n_test,
                   round(time.perf_counter() - start, 1)]
            writer.writerow(row)
            f.flush()
            print(f"epoch {epoch + 1}/{args.epochs}  train loss {row[1]:.4f} acc {row[2]:.2%}  "
                  f"test loss {row[3]:.4f} acc {row[4]:.2%}  {row[5]} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
