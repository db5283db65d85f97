"""Offline tools: priors, fit, evaluate, reports, data readers, synthetic drives, training, CLI."""
