"""Training and scoring Wave-GMS: configuration, data, the loop, evaluation, cost."""
