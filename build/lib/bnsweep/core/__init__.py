"""The trial core: config, data, models, trainable parameters, attacks, evaluation, the training loop
and checkpoints. It knows nothing of Ray or the command line."""
