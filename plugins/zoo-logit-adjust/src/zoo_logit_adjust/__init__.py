"""Logit adjustment (VSPW 5th place, report 3.1): the ``logit-adjust`` head wrapper and TTA policy.

Nothing is imported here: ``zoo list`` discovers the plugin without importing torch.
"""
