"""Training data: datasets and synthetic degradations."""
