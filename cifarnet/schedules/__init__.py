"""Learning-rate and dropout schedules, by name."""
from .dropout import DROPOUT_SCHEDULES, DropoutSchedule, make_dropout_schedule, set_dropout_rate
from .lr import LR_SCHEDULES, LRSchedule, make_lr_schedule

__all__ = ["DROPOUT_SCHEDULES", "DropoutSchedule", "LR_SCHEDULES", "LRSchedule", "make_dropout_schedule",
           "make_lr_schedule", "set_dropout_rate"]
