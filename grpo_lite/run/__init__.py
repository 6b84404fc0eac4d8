"""What a run leaves on disk, and how a run picks up from it.

- ``rundir.py``   ``RunDir``: the layout of a run folder — checkpoints, "latest", a new branch folder,
                  the metrics log, lineage; checkpoints written atomically and pruned
- ``state.py``    ``TrainerState``: capture and restore model, optimizer, scheduler, scaler, RNG,
                  sampling settings (explicit objects, not a trainer)
- ``rewards.py``  the reward functions a checkpoint holds, restored for a resume or a branch

Nothing here imports the trainer.
"""

from grpo_lite.run.files import is_complete, read_metrics, read_state
from grpo_lite.run.rundir import RunDir
from grpo_lite.run.state import TrainerState, rng_state, set_rng_state

__all__ = [
    "RunDir",
    "TrainerState",
    "is_complete",
    "read_metrics",
    "read_state",
    "rng_state",
    "set_rng_state",
]
