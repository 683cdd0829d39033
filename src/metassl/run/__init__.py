"""A run's infrastructure: its directory, files, checkpoints, logs, safety, torchrun and time budget."""
