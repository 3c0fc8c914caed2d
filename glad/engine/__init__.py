"""Training, evaluation and the three protocols, with paper-layout results tables."""
