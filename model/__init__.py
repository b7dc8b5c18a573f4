"""What one trial trains: data, encoders, poolers, heads, losses, the training loop, metrics.

This package never imports Ray: every piece runs from plain Python for one `TrialConfig`.
"""
