"""Training and pretraining: one run = one network, one data split, one schedule."""
