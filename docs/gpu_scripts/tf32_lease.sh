# Session 17: gpu_check on the head (TF32 timings added), the CuPy tests (TF32 switch test added),
# airbench94 with backend.tf32=true seeds 0-2, then where a TF32 step's GPU time goes.
source .offline/setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/nvidia-smi.txt 2>&1
t0=$(date +%s)
timeout 150 python3 -X faulthandler -m cifarnet.bench.gpu_check --out $OUT/gpu_check.json > $OUT/gpu_check.txt 2>&1
echo "gpu_check rc=$? $(( $(date +%s) - t0 )) s" | tee -a $OUT/times.txt
t=$(date +%s)
timeout 60 python3 -m pytest tests -m cupy -q -o addopts=-ra -n 4 -p no:cacheprovider > $OUT/pytest_cupy.txt 2>&1
echo "pytest rc=$? $(( $(date +%s) - t )) s" | tee -a $OUT/times.txt
wait_cifar
for seed in 0 1 2; do
  t=$(date +%s)
  timeout 90 python3 -m cifarnet +experiment=airbench94 backend=cupy backend.tf32=true seed=$seed data.root=/tmp/cifar \
    hydra.run.dir=/tmp/ab_tf32_$seed > /tmp/ab_tf32_$seed.txt 2>&1
  echo "cifarnet airbench tf32 seed $seed rc=$? $(( $(date +%s) - t )) s" | tee -a $OUT/times.txt
  { cat /tmp/ab_tf32_$seed.txt; echo "== result.json"; cat /tmp/ab_tf32_$seed/result.json; echo "== metrics.csv";
    cat /tmp/ab_tf32_$seed/metrics.csv; } > $OUT/cifarnet_airbench94_tf32_seed$seed.txt
done
t=$(date +%s)
timeout 80 python3 docs/gpu_scripts/tf32_profile.py > $OUT/profile_tf32.txt 2>&1
echo "profile rc=$? $(( $(date +%s) - t )) s" | tee -a $OUT/times.txt
tail -12 $OUT/gpu_check.txt; tail -2 $OUT/pytest_cupy.txt; grep -h "time to result" $OUT/cifarnet_*.txt | cut -c 1-200
grep -v "^    " $OUT/profile_tf32.txt | tail -40
