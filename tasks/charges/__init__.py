"""The bundled charge-prediction task (``charges-v1``)."""

from tasks.charges.task import CHARGES, ChargesConfig, ChargesTask, normalise_charge

__all__ = ["CHARGES", "ChargesConfig", "ChargesTask", "normalise_charge"]
