"""cifarnet: convolutional networks with hand-written forward and backward passes in NumPy/CuPy."""
__version__ = "0.1.0"
