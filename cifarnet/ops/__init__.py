"""Parameter-free array operations shared by several layers."""
