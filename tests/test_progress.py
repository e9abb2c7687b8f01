"""Progress bars (tqdm) appear on interactive terminals only, for training and evaluation."""
import io
import sys

import pytest

from .cli_helpers import compose_plain


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream, drawn", [(Terminal(), True), (io.StringIO(), False)])
def test_epoch_and_evaluation_bars_only_on_a_terminal(tmp_path, monkeypatch, stream, drawn):
    from cifarnet.experiment import train

    monkeypatch.setattr(sys, "stderr", stream)
    train(compose_plain("trainer.epochs=1", "data.train_size=128", "trainer.progress=true"), tmp_path)
    text = stream.getvalue()
    assert ("epoch 1/1" in text and "batch" in text and "evaluating" in text and "img/s" in text) == drawn
    if not drawn:
        assert text == ""


def test_progress_false_draws_nothing_even_on_a_terminal(tmp_path, monkeypatch):
    from cifarnet.experiment import train

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    train(compose_plain("trainer.epochs=1", "data.train_size=64", "trainer.progress=false"), tmp_path)
    assert "epoch 1/1" not in stream.getvalue()
