"""Learning happens: memorise 64 random images with random labels."""
import numpy as np
import pytest

from cifarnet.inference import infer
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD, Adam
from cifarnet.training import accuracy, train_step


def fit(model, optimizer, backend, images, labels, max_steps):
    """Full-batch training until the eval-mode accuracy is 100%; returns the steps taken."""
    x, y = backend.asarray(images), backend.asarray(labels)
    loss_fn = SoftmaxCrossEntropy()
    for step in range(1, max_steps + 1):
        train_step(model, loss_fn, optimizer, x, y)
        if step % 10 == 0:
            acc = accuracy(infer(model, x), y)                  # eval mode: running statistics
            if acc == 1.0:
                return step
    pytest.fail(f"did not reach 100% training accuracy in {max_steps} steps (last {acc:.0%})")


@pytest.fixture
def random_set():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 64)


def test_simplecnn_memorises_random_labels(backend, random_set):
    model = build_model(model_description("simplecnn"), seed=0).to(backend)
    steps = fit(model, SGD(lr=0.05, momentum=0.9), backend, *random_set, max_steps=300)
    assert steps <= 300


def test_small_resnet_memorises_random_labels(backend, random_set):
    desc = {"arch": "resnet", "depth": 8, "widths": [8, 16, 32], "dropout": 0.0}
    model = build_model(desc, seed=0).to(backend)
    steps = fit(model, Adam(lr=0.01), backend, *random_set, max_steps=300)
    assert steps <= 300
