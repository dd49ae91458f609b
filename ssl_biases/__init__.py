"""ssl-biases: inductive biases in self-supervised vision learning."""

__version__ = "0.1.0"
