"""ssl-biases: inductive biases in self-supervised vision learning."""

__version__ = "0.1.0"

# `ssl_biases.load_backbone(DIR)`, imported on first use (import stays light)
__all__ = ["load_backbone"]


def __getattr__(name: str):  # noqa: ANN202  (PEP 562 lazy attribute)
    if name == "load_backbone":
        from ssl_biases.run.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'ssl_biases' has no attribute {name!r}")
