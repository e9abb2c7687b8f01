"""Figures from a real tiny run and a sweep; predictions on generated PNG files."""
import csv
import subprocess
import sys

import pytest

from .cli_helpers import TINY, cifarnet

pytestmark = pytest.mark.slow          # end to end: runs, sweeps and predictions

pytest.importorskip("matplotlib", reason="plots need matplotlib (the [plot] extra)")
PIL = pytest.importorskip("PIL.Image", reason="predictions need Pillow (the [images] extra)")

RUN_FIGURES = ["accuracy.png", "confusion_matrix.png", "loss.png", "lr_schedule.png", "per_class_accuracy.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("plots")
    done = cifarnet(cwd, *TINY, "trainer.epochs=2", "plots=true", "schedule=cosine", "hydra.run.dir=outputs/run")
    assert done.returncode == 0, done.stderr
    return cwd, cwd / "outputs" / "run", done


def test_a_run_ends_with_its_figures(run):
    from cifarnet.run_dir import FIGURES

    assert sorted(FIGURES) == RUN_FIGURES                      # what overwrite=true clears is what is drawn
    _, run_dir, done = run
    for name in RUN_FIGURES:
        data = (run_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert "figures: loss.png" in done.stdout


def test_plot_command_redraws_a_run(run, tmp_path):
    cwd, run_dir, _ = run
    for name in RUN_FIGURES:
        (run_dir / name).unlink()
    done = subprocess.run([sys.executable, "-m", "cifarnet.plot", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in run_dir.glob("*.png")) == RUN_FIGURES
    bad = subprocess.run([sys.executable, "-m", "cifarnet.plot", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "neither metrics.csv nor job directories" in bad.stderr


def test_compare_figure_of_two_runs_in_either_csv_layout(run, tmp_path):
    _, run_dir, _ = run
    torch_csv = tmp_path / "torch.csv"
    torch_csv.write_text("epoch,train_loss,train_acc,test_loss,test_acc,seconds\n"
                         "1,2.1,0.21,2.0,0.25,3.0\n2,1.9,0.30,1.8,0.33,3.0\n")
    out = tmp_path / "both.png"
    argv = [sys.executable, "-m", "cifarnet.plot", "--compare", str(out)]
    done = subprocess.run(argv + [f"cifarnet={run_dir / 'metrics.csv'}", f"pytorch={torch_csv}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10000
    unlabelled = subprocess.run(argv + [str(torch_csv)], capture_output=True, text=True)
    assert unlabelled.returncode == 1 and "LABEL=path/to/metrics.csv" in unlabelled.stderr
    missing = subprocess.run(argv + [f"x={tmp_path / 'nope.csv'}"], capture_output=True, text=True)
    assert missing.returncode == 1 and "nope.csv not found" in missing.stderr


def test_compare_figure_draws_test_and_training_curves_per_run():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifarnet.plot import compare_figure

    full = [{"epoch": "1", "train_loss": "2.1", "train_acc": "0.21", "test_loss": "2.0", "test_acc": "0.25"},
            {"epoch": "2", "train_loss": "1.9", "train_acc": "0.30", "test_loss": "1.8", "test_acc": "0.33"}]
    no_test = [{k: v for k, v in r.items() if not k.startswith("test")} | {"epoch": str(i + 3)}
               for i, r in enumerate(full)]
    fig = compare_figure(plt, [("a", full), ("b", no_test)])
    acc_ax, loss_ax = fig.axes
    assert [ln.get_label() for ln in acc_ax.lines] == ["a, test", "a, train", "b, train"]
    assert [ln.get_label() for ln in loss_ax.lines] == ["a, test", "a, train", "b, train"]
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([25.0, 33.0])        # accuracy in percent
    assert list(loss_ax.lines[2].get_xdata()) == [3, 4] and list(loss_ax.lines[2].get_ydata()) == [2.1, 1.9]
    assert acc_ax.lines[0].get_color() != acc_ax.lines[2].get_color()              # one colour per run
    assert acc_ax.lines[0].get_linestyle() == "-" and acc_ax.lines[1].get_linestyle() == "--"
    assert loss_ax.get_yscale() == "linear"
    plt.close(fig)
    diverged = [dict(full[0], test_loss="88.0"), full[1]]       # one wild first epoch: a log scale keeps the rest
    fig = compare_figure(plt, [("a", diverged)])
    assert fig.axes[1].get_yscale() == "log"
    plt.close(fig)


def test_the_loss_axis_goes_logarithmic_only_over_a_wide_range():
    from cifarnet.plot import y_scale

    assert y_scale([[88.0, 1.2, 0.6], [2.0, 0.9, 0.5]]) == "log"
    assert y_scale([[2.3, 1.2, 0.6], [2.0, 0.9, 0.5]]) == "linear"
    assert y_scale([[0.0, 1.0]]) == "linear" and y_scale([]) == "linear"


def test_sweep_comparison_figure(tmp_path):
    done = cifarnet(tmp_path, "-m", *TINY, "data.train_size=64", "trainer.epochs=2", "optimizer.lr=0.1,0.01",
                    "plots=true", "hydra.sweep.dir=outputs/sweep")
    assert done.returncode == 0, done.stderr
    figure = tmp_path / "outputs" / "sweep" / "sweep_test_accuracy.png"
    assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 5000


def test_predict_on_png_files(run, tmp_path):
    cwd, run_dir, _ = run
    images = tmp_path / "images"
    images.mkdir()
    for i, (size, colour) in enumerate([((32, 32), (230, 60, 60)), ((80, 50), (60, 200, 60)), ((20, 20), (9, 9, 9))]):
        PIL.new("RGB", size, colour).save(images / f"img{i}.png")
    (images / "notes.txt").write_text("not an image")
    done = cifarnet(cwd, "mode=predict", f"ckpt={run_dir}/checkpoints/best_numpy.npz", f"images={images}/*",
                    "topk=4", f"hydra.run.dir={tmp_path}/pred")
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "pred" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    for r in rows:
        probs = [float(r[f"prob_{i}"]) for i in range(1, 5)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert {r[f"class_{i}"] for i in range(1, 5)} <= {"disk", "square", "ring", "cross", "h_stripes", "v_stripes",
                                                           "diamond", "triangle", "checker", "diagonal"}
    assert "img1.png" in done.stdout


def test_predict_without_images_is_one_line(run, tmp_path):
    cwd, run_dir, _ = run
    done = cifarnet(cwd, "mode=predict", f"ckpt={run_dir}/checkpoints/best_numpy.npz", f"images={tmp_path}/none/*",
                    f"hydra.run.dir={tmp_path}/pred")
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "cifarnet: error:" in line]
    assert done.returncode == 1 and len(errors) == 1 and "no images found" in errors[0]


def test_a_single_epoch_gets_one_whole_epoch_tick():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifarnet.plot import epoch_axis

    fig, ax = plt.subplots()
    ax.plot([1], [0.5], marker="o")
    epoch_axis(ax, [1])
    fig.canvas.draw()
    assert list(ax.get_xticks()) == [1]
    plt.close(fig)
