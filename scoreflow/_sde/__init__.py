from .base import AbstractSDE as AbstractSDE
from .edm import EDMSDE as EDMSDE
from .inverse import time_from_log_snr as time_from_log_snr
from .ve import VESDE as VESDE
from .vp import VPSDE as VPSDE, SubVPSDE as SubVPSDE
