"""Learning-rate warmup factors, as plain functions (``train.lr_warmup``).

``per_update`` (s3ray): a linear ramp over the first ``warmup_ratio`` of the optimiser updates, the first
update already at ``1 / warmup``. ``verl`` (s3's trainer): verl's ``get_constant_schedule_with_warmup``,
stepped once per training step, so every optimiser update of step ``t`` uses
``min(1, t / max(1, warmup_steps))``: step 0 runs at lr 0 even without warmup.
"""

from __future__ import annotations


def per_update_factor(update: int, warmup_updates: int) -> float:
    return 1.0 if warmup_updates <= 0 else min(1.0, (update + 1) / warmup_updates)


def verl_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, step / max(1, warmup_steps))
