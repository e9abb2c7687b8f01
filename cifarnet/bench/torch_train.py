"""Train the equivalent PyTorch model on the same batches as cifarnet, for accuracy comparisons.

    python -m cifarnet.bench.torch_train --model simplecnn --epochs 20 --out torch_simplecnn.csv
    python -m cifarnet.bench.torch_train --experiment resnet32_fast --out torch_resnet32_fast.csv \
        --state torch_resnet32_fast.pt --stop-after-minutes 150          # in pieces: run it again to continue
    python -m cifarnet.bench.torch_train --experiment resnet32_fast --init cifarnet --epochs 3 ...
    python -m cifarnet.bench.torch_train --experiment airbench94 --seed 0 --out torch_airbench94_seed0.csv
    python -m cifarnet.bench.torch_train --experiment airbench94 --device cuda --out ab.csv   # on a GPU (docs/gpu.md)

The recipe is cifarnet's own: the config ``python -m cifarnet model=<model>`` (or
``+experiment=<name>``) composes gives the batch size, optimizer (SGD, Adam or AdamW with the same
arguments), learning-rate schedule (the same step-by-step values), label smoothing, dropout rate,
epochs and crop padding mode; a flag given here overrides that one setting. The batches come from
cifarnet's own pipeline (:class:`cifarnet.data.BatchLoader`, the same seed, order, crops, flips
and normalisation as ``python -m cifarnet`` with the same settings), so a difference in accuracy
is the frameworks' (initialisation, arithmetic, dropout masks), not the data's. ``--init pytorch``
keeps PyTorch's default initialisation; ``--init cifarnet`` copies the initial weights of
cifarnet's model built with the same seed (and the recipe's initialisation scheme).

Writes one CSV row per epoch: epoch, train_loss, train_acc, test_loss, test_acc, seconds. With
``--state``, everything needed to continue (weights, optimizer, step, the rows so far, RNG states)
is saved after every epoch, and a later run with the same ``--state`` continues where it stopped,
rewriting the CSV whole: the pieces together are one run.

``--experiment airbench94`` runs airbench's whole recipe (:func:`cifarnet.bench.torch_airbench.train`:
its PyTorch twin, channels-last, on cifarnet's batches, with lookahead and the final test-time
augmentation) and writes a JSON summary beside the CSV (accuracy with and without TTA, time to result).

Needs ``torch`` (never a dependency of cifarnet: install it in another environment).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..data import Augmentation, BatchLoader, Normalization, load_dataset
from ..models import build_model, model_description
from ..schedules import LR_SCHEDULES, make_lr_schedule
from .torch_reference import build

COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]


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


def cifarnet_recipe(model: str, experiment: str | None) -> dict:
    """The config ``python -m cifarnet model=<model> [+experiment=<experiment>]`` composes, as a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ..cli import schema
    from ..cli.app import config_dir

    schema.register()
    overrides = [f"+experiment={experiment}"] if experiment else [f"model={model}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def settings(args: argparse.Namespace) -> dict:
    """The run's settings: the recipe's, with every flag that was given on top."""
    cfg = cifarnet_recipe(args.model, args.experiment)
    opt, sched = dict(cfg["optimizer"]), dict(cfg["schedule"])
    dropout = cfg["model"]["dropout"]
    recipe = {"model": cfg["model"]["name"], "epochs": cfg["trainer"]["epochs"], "batch": cfg["data"]["batch_size"],
              "optimizer": opt.pop("name"), "lr": opt.pop("lr"), "weight_decay": opt.pop("weight_decay", 0.0),
              "decay_norm_and_bias": opt.pop("decay_norm_and_bias", True), "optimizer_options": opt,
              "schedule": sched.pop("name"), "schedule_options": sched,
              "label_smoothing": cfg["trainer"]["label_smoothing"], "dropout": dropout,
              "pad_mode": cfg["data"]["augment"]["pad_mode"], "init_scheme": cfg["model"]["init"]}
    for key in ("epochs", "batch", "lr", "weight_decay", "label_smoothing", "dropout", "pad_mode"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    if args.schedule is not None:
        recipe["schedule"], recipe["schedule_options"] = args.schedule, {}
    if args.warmup_epochs is not None:
        recipe["schedule_options"]["warmup_epochs"] = args.warmup_epochs
    if args.momentum is not None:
        recipe["optimizer_options"]["momentum"] = args.momentum
    if args.nesterov:
        recipe["optimizer_options"]["nesterov"] = True
    if args.no_decay_norm_bias:
        recipe["decay_norm_and_bias"] = False
    if args.cifarnet_init is not None:
        recipe["init_scheme"] = args.cifarnet_init
    return recipe


def make_optimizer(torch, params, recipe: dict):
    """PyTorch's optimizer for cifarnet's ``sgd``, ``adam`` or ``adamw`` with the same arguments,
    weight decay off for biases and batch-norm parameters (1-d tensors) unless they are decayed."""
    params = list(params)
    exempt_bias = not recipe["decay_norm_and_bias"]
    decayed = [p for p in params if p.ndim > 1 or not exempt_bias]
    exempt = [p for p in params if p.ndim <= 1 and exempt_bias]
    groups = [{"params": decayed, "weight_decay": recipe["weight_decay"]}]
    groups += [{"params": exempt, "weight_decay": 0.0}] if exempt else []
    o, lr = recipe["optimizer_options"], recipe["lr"]
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.get("momentum", 0.0), nesterov=o.get("nesterov", False))
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[recipe["optimizer"]]
    return cls(groups, lr=lr, betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), eps=o.get("eps", 1e-8))


def save_state(torch, path: Path, net, opt, epoch: int, step: int, rows: list, recipe: dict) -> None:
    """Everything needed to continue after ``epoch``, written atomically (a crash leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "rows": rows, "recipe": recipe, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def write_rows(path: str, rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.torch_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplecnn", help="cifarnet's model=, with its recommended settings")
    parser.add_argument("--experiment", help="a cifarnet +experiment= recipe (overrides --model)")
    parser.add_argument("--root", default="data")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--no-decay-norm-bias", action="store_true", help="no weight decay on biases and BN")
    parser.add_argument("--nesterov", action="store_true")
    parser.add_argument("--schedule", choices=sorted(LR_SCHEDULES))
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--dropout", type=float, help="the model's dropout rate")
    parser.add_argument("--pad-mode", choices=["zero", "reflect"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--init", default="pytorch", choices=["pytorch", "cifarnet"])
    parser.add_argument("--cifarnet-init", help="cifarnet's scheme for --init cifarnet (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--out", required=True, help="CSV file for the per-epoch metrics")
    parser.add_argument("--state", type=Path, help="resumable state after every epoch; continued from if it exists")
    parser.add_argument("--stop-after-minutes", type=float,
                        help="end after the last epoch that leaves time for another of the same length")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"cifarnet: error: --device {args.device}: PyTorch {torch.__version__} sees no CUDA device "
                         "(a CPU build, or no GPU visible); --device cpu runs on the processor")
    if args.experiment == "airbench94":                   # its own loop: whitening, lookahead, TTA
        from .torch_airbench import train as train_airbench

        train_airbench(args, cifarnet_recipe(args.model, args.experiment))
        return 0
    recipe = settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("cifar10", root=args.root, download=False)
    norm = Normalization.from_images(data.train.images)
    train = BatchLoader(data.train, recipe["batch"], norm, augmentation=Augmentation(4, recipe["pad_mode"], True),
                        shuffle=True, drop_last=True, seed=args.seed)
    test = BatchLoader(data.test, 500, norm)
    net = build(recipe["model"], recipe["dropout"])
    if args.init == "cifarnet":
        description = model_description(recipe["model"], **({"init": recipe["init_scheme"]}
                                                             if recipe["init_scheme"] else {}))
        ours = build_model(description, data.image_shape, seed=args.seed)
        copy_initial_weights(net, ours)
        flatten_order_fix(net, ours, data.image_shape)
    device = torch.device(args.device)
    net.to(device)
    opt = make_optimizer(torch, net.parameters(), recipe)
    lr_at = make_lr_schedule(recipe["schedule"], recipe["lr"], recipe["epochs"], len(train),
                             **recipe["schedule_options"])
    first, step, rows = 0, 0, []
    if args.state is not None and args.state.is_file():
        saved = torch.load(args.state, weights_only=False)
        if saved["recipe"] != recipe:
            raise SystemExit(f"{args.state} was written with another recipe: {saved['recipe']} (now {recipe})")
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        first, step, rows = saved["epoch"], saved["step"], saved["rows"]
        print(f"continuing from {args.state} after epoch {first} (step {step})", flush=True)
    print(f"recipe: {recipe}", flush=True)
    to_torch = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)  # noqa: E731
    labels = lambda y: torch.from_numpy(y).to(device)                                               # noqa: E731
    started = time.perf_counter()
    for epoch in range(first, recipe["epochs"]):
        start, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        net.train()
        for x, y in train.epoch(epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            logits = net(to_torch(x))
            loss = torch.nn.functional.cross_entropy(logits, labels(y), label_smoothing=recipe["label_smoothing"])
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
        seconds = time.perf_counter() - start
        rows.append([epoch + 1, total / seen, correct / seen, test_loss / n_test, test_correct / n_test,
                     round(seconds, 1)])
        write_rows(args.out, rows)
        if args.state is not None:
            save_state(torch, args.state, net, opt, epoch + 1, step, rows, recipe)
        row = rows[-1]
        print(f"epoch {epoch + 1}/{recipe['epochs']}  train loss {row[1]:.4f} acc {row[2]:.2%}  "
              f"test loss {row[3]:.4f} acc {row[4]:.2%}  {row[5]} s", flush=True)
        elapsed = time.perf_counter() - started
        if (args.stop_after_minutes and epoch + 1 < recipe["epochs"]
                and elapsed + seconds > 60 * args.stop_after_minutes):
            print(f"stopping after epoch {epoch + 1} (--stop-after-minutes {args.stop_after_minutes:g}); "
                  "run the same command again to continue", flush=True)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
