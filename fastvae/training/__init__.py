"""Training: the fit loop, its state, optimizers, batches, interrupts, MPI."""
