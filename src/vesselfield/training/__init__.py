"""Training on one checkpoint / log / RNG / resume machinery.

- :func:`run_loop` (:mod:`.loop`): the per-case optimisation loop (SDF-CAR, implicit vessel
  models): ``step(i)`` for a number of iterations.
- :func:`train` (:mod:`.trainer`): the dataset trainer (VesselSDF, NUDF): epochs over a
  DataLoader, validation, ``best.pt``/``last.pt``, AMP on CUDA, DistributedDataParallel under
  ``torchrun``.
- :func:`save_checkpoint` / :func:`load_checkpoint` (:mod:`.checkpoint`): atomic checkpoints
  read with ``torch.load(weights_only=True)`` (:mod:`vesselfield.io.torch_files`), with every RNG
  state; :func:`seed_everything` and :func:`derived_seed` (seeds of independent streams).
- :class:`CsvLog` (:mod:`.log`): ``log.csv`` appended to as rows arrive.

See ``docs/training.md``. Importing this package does not import torch.
"""

from vesselfield.training.checkpoint import (derived_seed, load_checkpoint, read_checkpoint, save_checkpoint,
                                             seed_everything)
from vesselfield.training.log import CsvLog
from vesselfield.training.loop import LoopResult, run_loop
from vesselfield.training.trainer import BEST_NAME, LAST_NAME, TrainerConfig, TrainResult, split_indices, train

__all__ = [
    "BEST_NAME",
    "CsvLog",
    "LAST_NAME",
    "LoopResult",
    "TrainResult",
    "TrainerConfig",
    "derived_seed",
    "load_checkpoint",
    "read_checkpoint",
    "run_loop",
    "save_checkpoint",
    "seed_everything",
    "split_indices",
    "train",
]
