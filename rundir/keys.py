"""The keys that cross module boundaries above model/: in reported results, trial configs and run files.

The keys of what one trial computes (level2_macro_f1, epoch, finished, ...) belong to the trial and
live in model/metrics.py. The keys here are added around it: by the Ray trial functions (where a
trial ran, its checkpoint score), by the searcher (a trial's config dict), by the confirm stage (a
job's id). They go to `tune.report`, ASHA, Optuna, the callbacks, trials.json, jobs.json and the
leaderboard under exactly these spellings: a bare string key shared by two modules is a defect;
add a constant here instead.
"""

from __future__ import annotations

from model import metrics as M

# What Ray ranks checkpoints by: the level-2 macro-F1 on an evaluation that improved on all earlier
# ones, -1 otherwise. Strictly increasing over improvements, so the checkpoint Ray keeps as best is
# exactly the trial's best epoch, whatever Ray does with ties.
CHECKPOINT_SCORE = "checkpoint_score"

# Keys a Ray trial adds to the metrics of an evaluation.
DEVICE = "device"  # torch device the trial trained on, e.g. "cuda:0"
NODE_ID = "node_id"  # Ray node id of the worker that ran the trial
GPU_MEM_PEAK_GB = "gpu_mem_peak_gb"  # peak CUDA memory allocated by the trial (CUDA only)
# CUDA memory torch still held in the trial's worker when the trial started, left by the trials that
# worker ran before (workers are reused); 0 when they gave it all back. CUDA and reused workers only.
GPU_MEM_LEFT_GB = "gpu_mem_left_gb"
TIMESTAMP = "timestamp"  # Ray's wall-clock time of the result (seconds since the epoch)
TIME_TOTAL_S = "time_total_s"  # Ray's seconds of training of the trial so far
NODE_IP = "node_ip"  # Ray's IP of the node that reported the result

# Keys of a trial's config dict, as the searcher hands it to Ray and the callbacks read it back.
PARAMS = "params"  # the sampled TrialConfig values
OPTUNA_NUMBER = "optuna_number"  # the Optuna trial number
WARM_START = "warm_start"  # name of the space's warm-start point the trial evaluates, or None
DUPLICATE_OF = "duplicate_of"  # Optuna user attribute: a proposal the duplicate guard settled untrained
JOB = "job"  # a confirm trial's job id, `<member>/fold<f>/seed<s>` (stages/confirm/records.py)

# The metric the search maximises, and the scheduler's time unit.
OBJECTIVE = M.LEVEL2_MACRO_F1
TIME_ATTR = M.EPOCH
