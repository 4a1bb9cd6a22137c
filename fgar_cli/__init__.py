"""fgar: semi-supervised fine-grained action recognition with FinePseudo."""

__version__ = "0.1.0"
