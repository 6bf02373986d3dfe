from .base import AbstractSDE as AbstractSDE
from .edm import EDMSDE as EDMSDE
from .ve import VESDE as VESDE
from .vp import SubVPSDE as SubVPSDE, VPSDE as VPSDE
