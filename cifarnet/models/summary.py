"""A Keras-style text summary: each layer's output shape and parameter count, and the totals."""
from __future__ import annotations

from collections.abc import Sequence

from ..layers import Sequential


def summary(model: Sequential, input_shape: Sequence[int]) -> str:
    """Table of ``model``'s top-level layers for per-example ``input_shape`` (batch shown as N)."""
    shape = tuple(input_shape)
    rows = [("layer", "type", "output shape", "params")]
    for name, layer in model.children.items():
        shape = tuple(layer.output_shape(shape))
        rows.append((name, type(layer).__name__, str(("N",) + shape).replace("'", ""),
                     f"{layer.num_parameters():,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "-" * (sum(widths) + 6)

    def line(r):
        return "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                          r[3].rjust(widths[3])])

    n_buffers = sum(int(b.size) for _, b in model.named_buffers())
    out = [line(rows[0]), rule, *map(line, rows[1:]), rule,
           f"input shape: {str(('N',) + tuple(input_shape))}".replace("'", ""),
           f"trainable parameters: {model.num_parameters():,}",
           f"non-trainable buffers (batch norm statistics): {n_buffers:,}"]
    return "\n".join(out)
