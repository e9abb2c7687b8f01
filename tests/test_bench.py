"""The benchmark commands run and report what they promise (timings themselves are not asserted)."""
import json
import os
import re
import subprocess
import sys

import pytest

from cifarnet.bench.models import DEFAULT_BATCH, DEFAULT_WORKERS

pytestmark = pytest.mark.slow          # runs the benchmarks' command lines



def test_model_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "cifarnet.bench.models", "--models", "simplecnn", "--rounds", "1",
                           "--steps", "2", "--no-torch", "--breakdown", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "simplecnn" in done.stdout and "per-layer time" in done.stdout and "conv1" in done.stdout
    result = json.loads(out.read_text())["results"][0]
    assert result["cifarnet"]["step_ms"] > 0 and result["cifarnet"]["peak_rss_mb"] > 10
    assert [row["layer"] for row in result["layers"]][:2] == ["conv1", "batchnorm1"]
    assert result["workers"] == 1 and "simplecnn 1" in done.stdout


@pytest.mark.parametrize("name", ["simplecnn", "resnet32"])
def test_benchmark_trains_as_the_model_config_recommends(name):
    """The bench times each model with its config's batch size and trainer.workers."""
    from hydra import compose, initialize_config_dir

    from cifarnet.cli import schema
    from cifarnet.cli.app import config_dir

    schema.register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    assert cfg["trainer"]["workers"] == DEFAULT_WORKERS.get(name)
    assert cfg["data"]["batch_size"] == DEFAULT_BATCH.get(name, 128)


def test_data_benchmark_runs_on_synthetic_data(tmp_path):
    out = tmp_path / "data.json"
    done = subprocess.run([sys.executable, "-m", "cifarnet.bench.data", "--source", "synthetic", "--repeats", "1",
                           "--max-batches", "5", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["images_per_second_prefetch0"] > 0 and result["images_per_second_prefetch2"] > 0
    assert "background thread" in done.stdout


def test_shape_benchmark_runs_and_reports(tmp_path):
    from cifarnet.bench import shapes

    out = tmp_path / "shapes.json"
    assert shapes.main(["--images", "2", "--repeats", "1", "--json", str(out)]) == 0
    found = json.loads(out.read_text())
    assert [(r["channels"], r["product"][:7]) for r in found["products"]][:3] == [(16, "forward"), (16, "weight "),
                                                                                 (16, "column ")]
    assert len(found["products"]) == 9 and all(r["gflops"] > 0 and r["gflops_transposed"] > 0
                                               for r in found["products"])
    assert len(found["passes"]) == 12 and all(r["ns_per_element"] > 0 for r in found["passes"])
    layouts = [(r["channels"], r["layout"], r["default"]) for r in found["convolutions"]]
    assert layouts == [(c, layout, layout == "winograd") for c in (16, 32, 64)   # one thread: Winograd from 16
                       for layout in ("1x1", "2x2", "1x2", "winograd")]
    assert all(r["forward_ms"] > 0 and r["weight_grad_ms"] > 0 and r["input_grad_ms"] >= 0
               and r["total_ms"] > r["forward_ms"] for r in found["convolutions"])
    torch_rows = found["torch_convolutions"]                  # PyTorch's, where it is importable
    assert torch_rows is None or [r["channels"] for r in torch_rows] == [16, 32, 64]


@pytest.mark.parametrize("transports", [["shm"], ["shm", "mpi"]])
def test_processes_benchmark_runs_and_reports(transports):
    if "mpi" in transports:
        pytest.importorskip("mpi4py", reason="needs the [mpi] extra")
    done = subprocess.run([sys.executable, "-m", "cifarnet.bench.processes", "--model", "simplecnn", "--batch", "32",
                           "--steps", "1", "--rounds", "1", "--transport", *transports], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for transport in transports:
        assert f"2 processes x 1 threads ({transport})" in done.stdout.splitlines()[1]      # round 1
        assert f"median step: 2 processes x 1 threads ({transport})" in done.stdout


def test_machine_description_tells_cpu_generations_apart():
    from cifarnet.bench import machine_description

    text = machine_description()
    assert f"{os.cpu_count()} cores" in text and "NumPy" in text
    if os.path.exists("/proc/cpuinfo"):                       # family, model and AVX-512 from cpuinfo
        assert re.search(r"\(family \d+, model \d+, (AVX-512|no AVX-512)\)", text), text


def test_layout_benchmark_times_each_limit_in_turn_and_restores_the_default(monkeypatch, tmp_path):
    from cifarnet.bench import layouts
    from cifarnet.functional import conv

    seen = []
    choose = conv.choose_block
    monkeypatch.setattr(conv, "choose_block", lambda *a, **k: seen.append(conv.BLOCK_MAX_CHANNELS) or choose(*a, **k))
    rows = layouts.compare_limits([16, 0], pairs=2, model="resnet20", batch=8, eval_rounds=1)
    assert [(r["limit"], r["default"]) for r in rows] == [(16, True), (0, False)]
    assert rows[0]["ratio"] == 1.0 and all(r["step_ms"] > 0 and r["eval_img_per_s"] > 0 for r in rows)
    assert conv.BLOCK_MAX_CHANNELS == 16 and {0, 16} <= set(seen)          # both ran; the default is back
    with pytest.raises(SystemExit):
        layouts.main(["--limits", "16,x"])
    with pytest.raises(SystemExit):
        layouts.main(["--limits", "16,16"])


def test_checkout_comparison_alternates_fresh_runs_and_compares_pair_by_pair(tmp_path):
    from cifarnet.bench import checkouts

    calls = []

    def fake(checkout, model, steps):                       # the second checkout 10% faster, the machine drifting
        calls.append((checkout.name, model, steps))
        drift = 1 + 0.5 * ((len(calls) - 1) // 2)             # the same within a pair
        return {"step_ms": drift * (90.0 if checkout.name == "new" else 100.0), "eval_img_per_s": 500.0 / drift,
                "peak_rss_mb": 450.0 + len(calls)}

    result = checkouts.compare(tmp_path / "old", tmp_path / "new", "resnet32", pairs=3, steps=15, runner=fake,
                               progress=lambda line: None)
    assert calls == [("old", "resnet32", 15), ("new", "resnet32", 15)] * 3       # old, new, old, new, ...
    assert result["pairs"] == 3 and result["second_faster"] == 3
    assert abs(result["step_ratio"] - 0.9) < 1e-12 and result["eval_ratio"] == 1.0
    assert result["first"]["step_ms"] == 150.0 and result["second"]["peak_rss_mb"] == [452.0, 456.0]
    with pytest.raises(ValueError):
        checkouts.summarise([], [])
    with pytest.raises(ValueError, match="not a cifarnet checkout"):
        checkouts.check_checkout(tmp_path)
    with pytest.raises(SystemExit):
        checkouts.main([str(tmp_path), "."])
    with pytest.raises(SystemExit):
        checkouts.main([".", ".", "--workers", "0"])
    out = tmp_path / "b.json"                                  # --workers reaches bench.models in both checkouts
    assert checkouts.models_command("resnet32", 0, out, workers=1)[-2:] == ["--workers", "1"]
    assert "--workers" not in checkouts.models_command("resnet32", 15, out)


def test_checkout_comparison_runs_each_checkout_s_own_code(tmp_path):
    """Two copies of the package: each run imports the copy it was started in."""
    from pathlib import Path

    from cifarnet.bench import checkouts

    root = Path(__file__).resolve().parents[1]
    probe = tmp_path / "probe"
    (probe / "cifarnet" / "bench").mkdir(parents=True)
    (probe / "cifarnet" / "__init__.py").write_text("")
    (probe / "cifarnet" / "bench" / "__init__.py").write_text("")
    (probe / "cifarnet" / "bench" / "models.py").write_text(   # a stand-in that reports which copy ran
        "import json, sys\nout = sys.argv[sys.argv.index('--json') + 1]\n"
        "json.dump({'results': [{'cifarnet': {'step_ms': 1.0, 'eval_img_per_s': 2.0, 'peak_rss_mb': 3.0,"
        " 'argv': sys.argv[1:], 'file': __file__}}]}, open(out, 'w'))\n")
    mine = checkouts.run_models_bench(checkouts.check_checkout(probe), "simplecnn", 7)
    assert mine["file"].startswith(str(probe.resolve())) and mine["argv"][-2:] == ["--steps", "7"]
    out = tmp_path / "ab.json"
    assert checkouts.main([str(root), str(root), "--models", "simplecnn", "--pairs", "1", "--steps", "2",
                           "--json", str(out)]) == 0
    found = json.loads(out.read_text())
    assert found["results"]["simplecnn"]["pairs"] == 1 and found["results"]["simplecnn"]["first"]["step_ms"] > 0


def test_the_busy_core_benchmark_times_an_epoch_idle_and_beside_a_busy_process(tmp_path):
    from pathlib import Path

    from .cli_helpers import TINY

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "busy.json"
    done = subprocess.run([sys.executable, "-m", "cifarnet.bench.busy_core", str(root), "--rounds", "1", "--json",
                           str(out), "--", *TINY], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["checkouts"][str(root)]
    assert len(result["idle_s"]) == len(result["busy_s"]) == 1 and result["idle_median_s"] > 0
    assert "beside a busy process" in done.stdout
    spinners = json.loads(out.read_text())["spinner_pids"]
    assert len(spinners) == 1
    with pytest.raises(ProcessLookupError):             # the spinner is gone (killed and reaped)
        os.kill(spinners[0], 0)


def test_the_pytorch_twin_asked_for_a_gpu_it_cannot_see_says_so_in_one_line(monkeypatch):
    """``bench.torch_train --device cuda`` with a PyTorch that sees no GPU ends before loading data,
    with one line naming the device and the way out (a stand-in ``torch``: torch is never installed
    with cifarnet)."""
    import types

    from cifarnet.bench import torch_train

    fake = types.SimpleNamespace(__version__="2.13.0+cpu", cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "torch", fake)
    with pytest.raises(SystemExit, match=r"--device cuda: PyTorch 2\.13\.0\+cpu sees no CUDA device.*--device cpu"):
        torch_train.main(["--experiment", "airbench94", "--device", "cuda", "--root", "/nonexistent", "--out", "t.csv"])
