"""Where airbench94's step (batch 1024, fused kernels, whitening bias frozen) spends GPU time, TF32 off and on (session 17, one-off)."""
import time, collections, numpy as np
from cifarnet.backend import get_backend, use_tf32
from cifarnet.functional.dispatch import use_fused_kernels
from cifarnet.models import build_model, model_description
from cifarnet.models.data_init import fit_to_data
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.optim import SGD
from cifarnet.training import train_step
from cifarnet.bench.models import AIRBENCH_GROUPS
import torch
from torch.profiler import ProfilerActivity, profile

use_fused_kernels(True)
be = get_backend("cupy")
N = 1024
model = build_model(model_description("airbench94"), seed=0)
rng = np.random.default_rng(0)
xh = rng.standard_normal((N, 32, 32, 3)).astype(np.float32)
fit_to_data(model, xh)
model = model.to(be)
model.freeze_before({"whiten.b"})
x, y = be.asarray(xh), be.asarray(rng.integers(0, 10, N))
loss = SoftmaxCrossEntropy(0.2, "sum")
opt = SGD(lr=11.5, momentum=0.85, nesterov=True, weight_decay=0.0153, decoupled=True, groups=AIRBENCH_GROUPS)
opt.batch_size = N
for tf32 in (False, True, False, True):
    use_tf32(be, tf32)
    for _ in range(3):
        train_step(model, loss, opt, x, y, 1)
    be.synchronize()
    t = []
    for _ in range(10):
        s = time.perf_counter(); train_step(model, loss, opt, x, y, 1); be.synchronize(); t.append(time.perf_counter() - s)
    print("tf32" if tf32 else "float32", f"step median {np.median(t)*1e3:.2f} ms", flush=True)
for tf32 in (False, True):
    use_tf32(be, tf32)
    train_step(model, loss, opt, x, y, 1); be.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            train_step(model, loss, opt, x, y, 1)
        be.synchronize()
    totals = collections.Counter(); counts = collections.Counter()
    for e in prof.events():
        if e.device_type.name == "CUDA":
            totals[e.name[:90]] += e.device_time_total / 3; counts[e.name[:90]] += 1
    print("tf32" if tf32 else "float32", "GPU time per step %.2f ms" % (sum(totals.values()) / 1e3))
    for name, us in totals.most_common(16):
        print(f"  {us/1e3:8.3f} ms  x{counts[name]//3:3d}  {name}")
use_tf32(be, False)
