"""The project's error types: one family, so callers catch one thing."""


class BlockQNNError(Exception):
    """Base class of every error this project raises on purpose."""


class BlockError(BlockQNNError, ValueError):
    """A malformed block (NSC). The message names the layer index and the broken rule."""

    def __init__(self, message: str, layer: int | None = None, rule: str | None = None):
        self.layer = layer
        self.rule = rule
        if layer is not None:
            message = f"layer {layer}: {message}"
        if rule is not None:
            message = f"{message} [rule: {rule}]"
        super().__init__(message)


class ConfigError(BlockQNNError, ValueError):
    """A configuration value that cannot be used."""
