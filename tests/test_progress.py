"""The progress bar draws on terminals only."""
import io

from cifarnet.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_draws_in_place_on_a_terminal():
    out = Terminal()
    bar = ProgressBar(4, "epoch 1/2", unit="batch", stream=out, min_interval=0)
    for _ in range(4):
        bar.update(1, "loss 1.234 acc 50.0% lr 0.01 900 img/s")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") >= 4 and "epoch 1/2" in text and "100%" in text and "loss 1.234" in text
    assert text.endswith("\n")


def test_silent_off_a_terminal_unless_asked():
    out = io.StringIO()
    bar = ProgressBar(4, "epoch", stream=out)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""
    plain = io.StringIO()
    bar = ProgressBar(100, "download", unit="B", stream=plain, plain_every=0.5)
    for _ in range(10):
        bar.update(10)
    assert plain.getvalue().count("\n") == 2 and "\r" not in plain.getvalue()
