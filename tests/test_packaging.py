"""Packaging: the wheel carries every package and the configs; an installed cifarnet trains."""
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

from .cifar_fixtures import write_cifar

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cifarnet").rglob("__init__.py")}
    groups = {".".join(("cifarnet", *p.relative_to(ROOT).parts)) for p in (ROOT / "conf").rglob("*") if p.is_dir()}
    assert listed == found | {"cifarnet.conf"} | groups


@pytest.mark.slow                      # builds a wheel into a fresh virtual environment
def test_wheel_install_finds_its_configs_and_trains(tmp_path):
    """``pip install .`` into a fresh virtual environment, then train from an unrelated directory."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import cifarnet, sys; print(cifarnet.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True)
    assert str(env_dir) in where.stdout                          # the installed copy, not the source tree
    conf = Path(where.stdout.strip()).parent / "conf"
    shipped = {str(p.relative_to(conf)) for p in conf.rglob("*.yaml")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    done = subprocess.run([env_dir / "bin" / "cifarnet", "data=synthetic", "data.train_size=128",
                           "data.test_size=32", "trainer.epochs=1"], cwd=elsewhere, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((elsewhere / "outputs").glob("*/*/metrics.csv"))
    assert len(runs) == 1 and len(runs[0].read_text().splitlines()) == 2
    write_cifar(elsewhere / "cifar", test=20)                # the CIFAR-10 layout and class names, tiny
    shipped = subprocess.run([env_dir / "bin" / "cifarnet", "mode=eval", "ckpt=pretrained:simplecnn",
                              "data.root=cifar", "data.download=false"], cwd=elsewhere, capture_output=True,
                             text=True, timeout=300)
    assert shipped.returncode == 0 and "test accuracy" in shipped.stdout, shipped.stdout + shipped.stderr


def test_the_readme_viewer_commands_come_with_the_extras_it_names():
    """`tensorboard --logdir` needs the tensorboard package (tensorboardX only writes); `mlflow ui`
    needs the full mlflow (mlflow-skinny has no server). Checked by hand: both served the runs of
    a cifarnet run in a venv with `pip install -e '.[tensorboard,mlflow-ui]'`."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {req.split(">")[0].split("=")[0].split("[")[0] for req in reqs} for extra, reqs in extras.items()}
    assert "tensorboard" in names["tensorboard"]
    ui = [extra for extra, packages in names.items() if "mlflow" in packages]
    assert ui == ["mlflow-ui"]
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[tensorboard]'" in readme and "pip install -e '.[mlflow-ui]'" in readme
    assert "tensorboard --logdir outputs" in readme and "mlflow ui --backend-store-uri" in readme
