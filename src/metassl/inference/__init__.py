"""Using a trained model: evaluate a run, predict labels, export a self-contained program."""
