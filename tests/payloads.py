"""A pickle payload that would create a file when unpickled: proof that loaders never run code."""
import os


class TouchPayload:
    """Unpickling this runs ``touch <sentinel>``."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))
