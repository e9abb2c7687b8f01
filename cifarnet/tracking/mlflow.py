"""One MLflow run per cifarnet run or sweep job (``logger=mlflow``; needs mlflow-skinny).

By default the store is local, ``sqlite:///outputs/mlflow.db`` with artifacts under
``outputs/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`` shows
them); ``logger.mlflow.tracking_uri`` points at a server instead. Each run records the composed
config, flattened, as parameters, every epoch's metrics (step = epoch), and at the end the best
checkpoint and the figures as artifacts. MLflow's old file store (``./mlruns``) refuses new
writes in MLflow 3, hence SQLite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import TRACKERS, Tracker, TrackerError, numbers

PARAMS_PER_CALL = 100                 # MLflow's limit for one batch of parameters
SERVER_TIMEOUT = 5.0                  # seconds a tracking server has to answer at start-up


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": "0.1"}``; lists become their text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


def _require_mlflow() -> None:
    try:
        import mlflow.entities  # noqa: F401
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise TrackerError("logger=mlflow needs MLflow, which is not installed: "
                           "pip install 'cifarnet[mlflow]'") from None


def check_server(uri: str, timeout: float = SERVER_TIMEOUT) -> None:
    """Raise :class:`TrackerError` unless the HTTP(S) tracking server at ``uri`` answers within
    ``timeout`` seconds (any HTTP answer counts). MLflow's own client would retry for minutes."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass                                  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackerError(f"the MLflow tracking server logger.mlflow.tracking_uri={uri} does not answer "
                           f"({reason}); start it, or leave tracking_uri unset for the local store") from None


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """Args: ``tracking_uri``: an MLflow server or store (None: the local SQLite file above);
    ``experiment``: the MLflow experiment the runs go into."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "cifarnet"):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = self.run_id = None

    def check(self) -> None:
        _require_mlflow()
        if self.tracking_uri and self.tracking_uri.startswith(("http://", "https://")):
            check_server(self.tracking_uri)

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        from mlflow.entities import Param

        uri, artifacts = self.tracking_uri, None
        if uri is None:                       # a local store beside the runs
            Path("outputs").mkdir(exist_ok=True)
            uri = f"sqlite:///{Path('outputs/mlflow.db').resolve()}"
            artifacts = Path("outputs/mlartifacts").resolve().as_uri()
        self.client = _client(uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            self.experiment, artifact_location=artifacts)
        run_dir = Path(run_dir)
        name = run_dir.name if not run_dir.name.isdigit() else f"{run_dir.parent.name}/{run_dir.name}"
        run = self.client.create_run(experiment_id, run_name=name, tags={"cifarnet.run_dir": str(run_dir.resolve()),
                                                                          "cifarnet.resumed": str(resumed)})
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(config).items()]
        for start in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[start:start + PARAMS_PER_CALL])

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {k: v for k, v in numbers(metrics).items() if k not in ("epoch", "step")}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])

    def finish(self, artifacts: list[Path], failed: bool = False) -> None:
        if self.client is None:
            return
        for path in artifacts:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
