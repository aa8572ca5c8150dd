#!/usr/bin/env bash
# The real job scripts on a real (private, single-node) Slurm: a training job gets USR1 mid-run,
# checkpoints, is requeued, resumes and ends with the same final loss as an uninterrupted run;
# killing one rank of a running job ends the whole job with a non-zero exit within 60 s and
# leaves the last checkpoint loadable.
# shellcheck source=tests/slurm_lib.sh
source "$(dirname "$0")/slurm_lib.sh"
BIN=$repo/${BUILD:-build}/bin
export MEMTRAIN=$BIN/memtrain OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_btl_base_warn_component_unused=0
CONF=(--d_model=32 --seg_len=28 --streams=4 --stream_block=2 --horizon=2 --steps=300 --warmup=5 --log_every=10
      --eval_every=0 --ckpt_every=50)
final_loss() { tail -n 1 "$1/metrics.csv" | cut -d, -f1,2; }

# the uninterrupted reference, outside Slurm
mpirun --oversubscribe -np 2 "$MEMTRAIN" --config jobs/configs/memformer.conf "${CONF[@]}" \
  --run_dir="$dir/ref" >"$dir/ref.log" 2>&1 || { cat "$dir/ref.log"; fail "reference run"; }
echo "reference: step,loss = $(final_loss "$dir/ref")"

start_cluster

# 1. USR1 mid-run -> checkpoint -> requeue -> resume -> the same final loss
export RUN_DIR=$dir/job
job=$(sbatch --parsable -n 2 --requeue --open-mode=append -o "$dir/job.out" \
  jobs/train.sbatch jobs/configs/memformer.conf "${CONF[@]}")
wait_state "$job" 60 RUNNING >/dev/null
# signal once training is under way and before it ends
for _ in $(seq 600); do
  [ -s "$RUN_DIR/metrics.csv" ] && [ "$(wc -l <"$RUN_DIR/metrics.csv")" -ge 3 ] && break
  sleep 0.1
done
scancel --signal=USR1 --batch "$job"
echo "USR1 sent at step $(tail -n 1 "$RUN_DIR/metrics.csv" | cut -d, -f1)"
wait_state "$job" 120 "PENDING|REQUEUED" >/dev/null || true
state=$(wait_state "$job" 180 "COMPLETED|FAILED|CANCELLED|TIMEOUT")
[ "$state" = COMPLETED ] || fail "job ended $state"
grep -q "stopped by a signal after step" "$dir/job.out" || fail "no checkpoint-on-signal message"
grep -q "job requeued" "$dir/job.out" || fail "not requeued"
grep -q "restart 1): resuming" "$dir/job.out" || fail "second run did not resume"
grep -q "resumed from $RUN_DIR/ckpt/ckpt-" "$dir/job.out" || fail "no resume message"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "Restarts=$(job_field "$job" Restarts)"
[ "$(final_loss "$dir/ref")" = "$(final_loss "$RUN_DIR")" ] \
  || fail "final loss $(final_loss "$RUN_DIR") differs from the uninterrupted $(final_loss "$dir/ref")"
echo "ok: USR1 at a step boundary, requeue, resume; final step,loss $(final_loss "$RUN_DIR") as uninterrupted"

# 2. kill -9 one rank: the job ends non-zero within 60 s; the last checkpoint still loads
export RUN_DIR=$dir/kill
job=$(sbatch --parsable -n 2 -o "$dir/kill.out" jobs/train.sbatch jobs/configs/memformer.conf \
  "${CONF[@]}" --steps=100000)
wait_state "$job" 60 RUNNING >/dev/null
for _ in $(seq 600); do [ -e "$RUN_DIR/ckpt/LATEST" ] && break; sleep 0.1; done
[ -e "$RUN_DIR/ckpt/LATEST" ] || fail "no checkpoint before the kill"
victim=$(pgrep -f "$MEMTRAIN.*--run_dir=$RUN_DIR" | tail -n 1)
[ -n "$victim" ] || fail "no rank process found"
t0=$SECONDS
kill -9 "$victim"
state=$(wait_state "$job" 60 "COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL")
[ "$state" != COMPLETED ] || fail "job with a killed rank reported COMPLETED"
code=$(job_field "$job" ExitCode)
[ "$code" != "0:0" ] || fail "job with a killed rank exited 0"
pgrep -f "$MEMTRAIN.*--run_dir=$RUN_DIR" >/dev/null && fail "ranks left running"
mpirun --oversubscribe -np 2 "$MEMTRAIN" eval --ckpt "$RUN_DIR/ckpt/$(cat "$RUN_DIR/ckpt/LATEST")" \
  --eval_docs=4 >"$dir/eval.log" 2>&1 || { cat "$dir/eval.log"; fail "last checkpoint does not load"; }
echo "ok: rank killed -> job $state (exit $code) after $((SECONDS - t0)) s; $(grep -o 'validation perplexity [0-9.]*' "$dir/eval.log") from the last checkpoint"
# 3. scancel --batch --signal=TERM stops a job for good: a checkpoint, status 75, no requeue
#    (only the time limit's USR1 requeues), though the job may be requeued
export RUN_DIR=$dir/stop
job=$(sbatch --parsable -n 2 --requeue -o "$dir/stop.out" jobs/train.sbatch jobs/configs/memformer.conf \
  "${CONF[@]}" --steps=100000)
wait_state "$job" 60 RUNNING >/dev/null
for _ in $(seq 600); do [ -s "$RUN_DIR/metrics.csv" ] && [ "$(wc -l <"$RUN_DIR/metrics.csv")" -ge 3 ] && break; sleep 0.1; done
scancel --batch --signal=TERM "$job"
state=$(wait_state "$job" 120 "COMPLETED|FAILED|CANCELLED|TIMEOUT")
grep -q "checkpoint written; resubmit with the same arguments to continue" "$dir/stop.out" || { cat "$dir/stop.out"; fail "TERM: no stop line"; }
! grep -q "job requeued" "$dir/stop.out" || fail "TERM requeued the job"
[ "$(job_field "$job" Restarts)" = 0 ] && [ "$(job_field "$job" ExitCode)" = "75:0" ] \
  || fail "TERM: Restarts=$(job_field "$job" Restarts) ExitCode=$(job_field "$job" ExitCode), state $state"
[ -e "$RUN_DIR/ckpt/LATEST" ] || fail "TERM: no checkpoint"
echo "ok: scancel --batch --signal=TERM: checkpoint, exit 75, not requeued"
# the resubmitted job applies its CONFIG over the checkpoint's settings (the job script, run
# by hand here: the same path as under Slurm): another model is refused in one line with the
# run left as it was, another lr is listed as changed
before=$(ls "$RUN_DIR/ckpt")
status=0
bash jobs/train.sbatch jobs/configs/demo.conf >"$dir/other.out" 2>&1 || status=$?
[ "$status" -ne 0 ] && [ "$(grep -c '^memtrain: cannot resume .*the model.s shape would change: arch (memformer -> decoder)' "$dir/other.out")" -eq 1 ] \
  && [ "$(ls "$RUN_DIR/ckpt")" = "$before" ] || { cat "$dir/other.out"; fail "a job with another CONFIG resumed the run"; }
at=$(sed 's/^ckpt-0*\([0-9]*\)\.h5$/\1/' "$RUN_DIR/ckpt/LATEST")
bash jobs/train.sbatch jobs/configs/memformer.conf "${CONF[@]}" --steps=100000 --stop_after=$((at + 1)) \
  --lr=0.002 >"$dir/lr.out" 2>&1 || { cat "$dir/lr.out"; fail "resubmitted job with another lr"; }
grep -q '^resume: changed settings: .*lr (0.003 -> 0.002)' "$dir/lr.out" \
  || { cat "$dir/lr.out"; fail "the resumed job did not list lr as changed"; }
echo "ok: a resubmitted job resumes with its CONFIG's settings: another model refused, another lr listed"

# 4. mpirun -np 1 inside a 2-task allocation (the first point of a scaling sweep) runs
printf '#!/usr/bin/env bash\nmpirun -q -np 1 "%s" --config jobs/configs/memformer.conf %s --steps=6 --run_dir="%s"\n' \
  "$MEMTRAIN" "${CONF[*]}" "$dir/one" >"$dir/one.sbatch"
job=$(sbatch --parsable -n 2 -o "$dir/one.out" "$dir/one.sbatch")
state=$(wait_state "$job" 120 "COMPLETED|FAILED|CANCELLED|TIMEOUT")
[ "$state" = COMPLETED ] && grep -q "^summary: steps 1-6 of 6" "$dir/one.out" \
  || { cat "$dir/one.out"; fail "mpirun -np 1 in a 2-task allocation: $state"; }
echo "ok: mpirun -np 1 in a 2-task allocation trains"
echo "test_slurm_train: all passed"
