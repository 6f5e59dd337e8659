"""Release tooling for Gemma derivatives: cards, Terms of Use, variants, verify, publish."""

__version__ = "0.1.0"
