cd /work/main
export PATH=$PWD/.venv/bin:$PATH GLUE_DIR=/work/shared/glue PYTHONUNBUFFERED=1
for j in 1 2; do
  s=$(date +%s)
  python -m trunkserve.training train-heads --tasks rte,mrpc --max-train rte=1500,mrpc=2000 --epochs 4 --student-epochs 5 --lr 3e-4 --full-lr 1e-4 \
    --depths 2,3 --search --search-student-layers 1,2 --seeds 0,1,2 --full-baseline --no-progress --jobs $j \
    --out /tmp/ab/j$j/heads --summary /tmp/ab/j$j.json > /tmp/ab/j$j.log 2>&1
  echo "jobs=$j rc=$? seconds=$(( $(date +%s) - s ))" >> /tmp/ab/times.txt
done
