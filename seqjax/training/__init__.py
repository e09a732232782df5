"""Training, split by job: ``optimizers``, ``losses``, ``steps`` (the pure
step, the scanned K-steps train call, compile counting), ``schedules`` (the
rows of each step), ``records`` (config, stats, metrics log), ``hooks`` (the
periodic actions) and ``loop`` (``fit``). ``seqjax.train`` re-exports the
public names."""
