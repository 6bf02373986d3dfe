from .base import AbstractSchedule as AbstractSchedule
from .cosine import CosineSchedule as CosineSchedule
from .fixed_linear import FixedLinearSchedule as FixedLinearSchedule
from .learned import LearnedSchedule as LearnedSchedule
from .linear import LinearSchedule as LinearSchedule
