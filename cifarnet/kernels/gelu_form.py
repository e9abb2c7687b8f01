"""GELU's tanh form, ``0.5 x (1 + tanh(C (x + A x^3)))``: its constants, shared by the ops
(:mod:`cifarnet.functional.activation`) and the kernels that apply GELU (:mod:`.batchnorm_act`)."""

GELU_C = 0.7978845608028654      # sqrt(2 / pi)
GELU_A = 0.044715
