"""Host read-backs (a synchronisation each on a GPU), counted on the CPU with a stand-in device
module (:mod:`cifarnet.counting`): at most one per training step and per evaluation batch."""
import numpy as np

from cifarnet.counting import counting_backend
from cifarnet.data import BatchLoader, Normalization, load_dataset
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD
from cifarnet.training import evaluate
from cifarnet.training.hooks import Hook
from cifarnet.training.settings import TrainerSettings
from cifarnet.training.trainer import Trainer


class ReadbacksPerStep(Hook):
    def __init__(self, xp):
        self.xp, self.marks = xp, []

    def log_step(self, step, lr):
        self.marks.append(self.xp.readbacks)


def setup(name: str, tmp_path):
    backend = counting_backend()
    data = load_dataset("synthetic", train_size=96, test_size=64)
    norm = Normalization.from_images(data.train.images)
    train = BatchLoader(data.train, 32, norm, shuffle=True, drop_last=True, seed=0, backend=backend, prefetch=0)
    test = BatchLoader(data.test, 16, norm, backend=backend, prefetch=0)
    model = build_model(model_description(name), seed=0).to(backend)
    return backend, model, train, test


def test_a_training_step_reads_back_once(tmp_path):
    for name in ("simplecnn", "resnet20"):
        backend, model, train, test = setup(name, tmp_path)
        probe = ReadbacksPerStep(backend.xp)
        (tmp_path / name).mkdir()
        settings = TrainerSettings(epochs=1, progress=False, handle_signals=False, workers=1, nonfinite="skip")
        trainer = Trainer(model, SGD(lr=0.01, weight_decay=5e-4, decay_norm_and_bias=False), lambda s: 0.01, None,
                          train, {"test": test}, 10, tmp_path / name, settings, {"backend": "numpy"}, hooks=[probe])
        trainer.fit()
        per_step = np.diff(probe.marks)
        assert len(per_step) == 2 and (per_step == 1).all(), (name, probe.marks)
        assert type(model.store.params).__name__ == "DeviceArray"          # the step ran on the stand-in


def test_evaluation_reads_back_once_per_pass(tmp_path):
    backend, model, _, test = setup("resnet20", tmp_path)
    backend.xp.reset()
    result = evaluate(model, test, 10)
    assert len(test) == 4 and backend.xp.readbacks == 1
    assert result.images == 64 and result.confusion.sum() == 64


def test_the_stand_in_counts_what_the_host_reads():
    xp = counting_backend().xp
    a = xp.asarray(np.arange(4.0))
    b = (a * 2).sum()                                  # on the device: nothing read
    assert xp.uploads == 1 and xp.readbacks == 0 and type(b).__name__ == "DeviceArray"
    float(b), bool(a[1] > 0), a.tolist()
    assert xp.readbacks == 3
