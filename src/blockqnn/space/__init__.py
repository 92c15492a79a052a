"""The search space: the NSC encoding of blocks and the networks built from them."""

from blockqnn.space.nsc import (
    DEFAULT_MAX_LAYERS,
    KERNELS,
    Block,
    Layer,
    LayerType,
    legal_actions,
)

__all__ = ["Block", "Layer", "LayerType", "KERNELS", "DEFAULT_MAX_LAYERS", "legal_actions"]
