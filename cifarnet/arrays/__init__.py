"""Parameter-free array manipulations shared by the ops' implementations: sliding windows (im2col
and its adjoint), blocked patches, and row views of NHWC arrays. No gradients live here."""
