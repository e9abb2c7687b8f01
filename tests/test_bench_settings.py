"""cifarnet.bench.settings: a tuning setting's values timed in turn inside one process."""
from __future__ import annotations

import json
import types

import pytest

from cifarnet.bench import settings


class FakeRunner:
    """Steps that take as long as the setting's value says (seconds per value), recording the value
    each step saw."""

    def __init__(self, module, name, seconds, fail_at=None):
        self.module, self.name, self.seconds, self.fail_at = module, name, seconds, fail_at
        self.seen = []

    def step(self) -> float:
        value = getattr(self.module, self.name)
        self.seen.append(value)
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("a step failed")
        return self.seconds[value]

    def eval_batch(self) -> float:
        return self.seconds[getattr(self.module, self.name)] / 10


def test_values_take_turns_abba_after_a_warm_up_and_the_setting_comes_back():
    module = types.ModuleType("tuning")
    module.CHUNK = 2
    runner = FakeRunner(module, "CHUNK", {2: 0.4, 4: 0.3})
    rows = settings.compare_values(module, "CHUNK", [2, 4], pairs=4, runner=runner, eval_rounds=2,
                                   images_per_eval=500)
    assert runner.seen == [2, 2, 4, 4] + [2, 4, 4, 2, 2, 4, 4, 2]         # warm-up, then ABBA
    assert module.CHUNK == 2
    assert [(r["value"], r["default"]) for r in rows] == [(2, True), (4, False)]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] == pytest.approx(0.75)
    assert rows[1]["faster_rounds"] == 4 and rows[0]["faster_rounds"] == 0
    assert rows[1]["step_ms"] == pytest.approx(300.0) and rows[1]["eval_img_per_s"] == pytest.approx(500 / 0.03)


def test_a_failing_step_still_restores_the_setting_and_a_missing_one_is_refused():
    module = types.ModuleType("tuning")
    module.CHUNK = 2
    runner = FakeRunner(module, "CHUNK", {2: 0.4, 8: 0.1}, fail_at=3)
    with pytest.raises(RuntimeError, match="a step failed"):
        settings.compare_values(module, "CHUNK", [8, 2], pairs=2, runner=runner)
    assert runner.seen[-1] == 2 and module.CHUNK == 2                      # failed while set to 2, then restored
    with pytest.raises(AttributeError, match="no setting 'CHUNKS'"):
        settings.compare_values(module, "CHUNKS", [1, 2], pairs=1, runner=runner)


def test_settings_and_values_are_read_from_the_command_line_s_words():
    from cifarnet.functional import conv

    assert settings.resolve("cifarnet.functional.conv.CHUNK_BYTES") == (conv, "CHUNK_BYTES")
    with pytest.raises(ValueError, match="module.NAME"):
        settings.resolve("CHUNK_BYTES")
    assert [settings.parse_value(v) for v in ("16", "0.5", "True", "None", "(1, 2)")] == [16, 0.5, True, None, (1, 2)]
    with pytest.raises(ValueError, match="Python literal"):
        settings.parse_value("sixteen")


def test_the_command_line_refuses_a_setting_that_does_not_exist(capsys):
    with pytest.raises(SystemExit) as stop:
        settings.main(["cifarnet.functional.conv.NO_SUCH_KNOB", "1", "2"])
    assert stop.value.code == 2 and "has no setting 'NO_SUCH_KNOB'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        settings.main(["cifarnet.functional.conv.CHUNK_BYTES", "1"])       # one value compares nothing


@pytest.mark.slow
def test_the_command_line_times_a_real_model_and_writes_json(tmp_path, capsys):
    from cifarnet.functional import conv

    out = tmp_path / "settings.json"
    default = conv.CHUNK_BYTES
    assert settings.main(["cifarnet.functional.conv.CHUNK_BYTES", str(default), "1048576", "--model", "simplecnn",
                          "--batch", "8", "--pairs", "2", "--workers", "1", "--eval-rounds", "1",
                          "--json", str(out)]) == 0
    found = json.loads(out.read_text())
    assert [(v["value"], v["default"]) for v in found["values"]] == [(repr(default), True), ("1048576", False)]
    assert all(v["step_ms"] > 0 and v["eval_img_per_s"] > 0 for v in found["values"])
    assert conv.CHUNK_BYTES == default and "CHUNK_BYTES" in capsys.readouterr().out
