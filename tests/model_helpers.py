"""Shared test helpers for models."""
from cifarnet.layers import BatchNorm


def randomise_batch_norms(model, rng):
    """Give every batch norm inside ``model`` non-trivial gamma, beta and running statistics
    (written in place, keeping each array's dtype); returns ``model``."""
    for _, layer in model.walk():
        if isinstance(layer, BatchNorm):
            c = layer.num_features
            layer.gamma[:] = rng.uniform(0.5, 2.0, c)      # a buffer of ones when the scale is fixed
            layer.params["beta"][:] = rng.standard_normal(c)
            layer.buffers["running_mean"][:] = rng.standard_normal(c)
            layer.buffers["running_var"][:] = rng.uniform(0.2, 3.0, c)
    return model
