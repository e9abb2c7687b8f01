"""A checkpoint's model, rebuilt from its own description and loaded with its weights."""
from __future__ import annotations

import numpy as np

from ..checkpoint import Checkpoint, CheckpointError
from .builder import build_model


def restore_model(checkpoint: Checkpoint, backend, dtype=np.float32):
    """Rebuild the model a checkpoint describes and load its weights, on ``backend``.

    Raises:
        CheckpointError: the weights do not fit the checkpoint's own model description.
    """
    meta = checkpoint.meta
    model = build_model(meta["model"], meta["input_shape"], seed=0, dtype=dtype)
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit its own model description: {err}") from None
    return model.to(backend)
