"""The command line: Hydra composes the config, :mod:`cifarnet.experiment` does the work."""
