"""Re-export of the shared input error so release code has one import."""

from gemma_ref.errors import InputError

__all__ = ["InputError"]
