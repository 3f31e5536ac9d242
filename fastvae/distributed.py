"""Data-parallel training over MPI, by its public name: ``from fastvae import distributed``
(the code is :mod:`fastvae.training.distributed`)."""
from .training.distributed import (Distributed, DistributedError, detected_size,  # noqa: F401
                                   local_rank, rank_backend, shard, world)
