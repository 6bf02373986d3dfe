from .base import AbstractSDE as AbstractSDE
from .edm import EDMSDE as EDMSDE
from .ve import VESDE as VESDE
from .vp import VPSDE as VPSDE, SubVPSDE as SubVPSDE
