"""Self-distillation (VSPW 5th place, report 3.2): the ``self-distill`` loss."""
