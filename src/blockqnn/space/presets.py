"""Named blocks in NSC, each with its source."""

from __future__ import annotations

from blockqnn.errors import ConfigError
from blockqnn.space.nsc import Block

PRESETS: dict[str, dict] = {
    "plain": {
        "nsc": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]],
        "source": "one pre-activation 3x3 convolution: the simplest block, a VGG-style stage",
    },
    "resnet_basic": {
        "nsc": [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 0, 2], [4, 7, 0, 0, 0]],
        "source": "pre-activation ResNet basic block (He et al., ECCV 2016): two 3x3 convs and "
        "an identity shortcut added; also the example in INTERFACE.md",
    },
    "resnet_bottleneck": {
        "nsc": [
            [1, 1, 1, 0, 0],
            [2, 1, 3, 1, 0],
            [3, 1, 1, 2, 0],
            [4, 5, 0, 0, 3],
            [5, 7, 0, 0, 0],
        ],
        "source": "pre-activation ResNet bottleneck (He et al., 2016), 1x1-3x3-1x1 with the "
        "identity shortcut (no channel expansion: every conv outputs F)",
    },
    "inception": {
        "nsc": [
            [1, 1, 1, 0, 0],
            [2, 1, 1, 0, 0],
            [3, 1, 3, 2, 0],
            [4, 1, 1, 0, 0],
            [5, 1, 5, 4, 0],
            [6, 2, 3, 0, 0],
            [7, 1, 1, 6, 0],
            [8, 7, 0, 0, 0],
        ],
        "source": "Inception module (Szegedy et al., CVPR 2015): 1x1, 1x1-3x3, 1x1-5x5 and "
        "3x3 max pool-1x1 branches, concatenated at the block output",
    },
    "densenet_like": {
        "nsc": [
            [1, 1, 3, 0, 0],
            [2, 6, 0, 0, 1],
            [3, 1, 3, 2, 0],
            [4, 6, 0, 2, 3],
            [5, 1, 3, 4, 0],
            [6, 6, 0, 4, 5],
            [7, 7, 0, 0, 0],
        ],
        "source": "a dense block in the style of DenseNet (Huang et al., CVPR 2017): three 3x3 "
        "pre-activation convolutions, each fed the concatenation of the block input and every "
        "earlier convolution (each concat is followed by a 1x1 back to F, BLOCKQNN.md section 2)",
    },
    "blockqnn_paper_like": {
        "nsc": [
            [1, 1, 1, 0, 0],
            [2, 1, 3, 1, 0],
            [3, 1, 1, 0, 0],
            [4, 1, 5, 3, 0],
            [5, 6, 0, 2, 4],
            [6, 3, 3, 0, 0],
            [7, 5, 0, 5, 6],
            [8, 7, 0, 0, 0],
        ],
        "source": "a multi-branch block in the style of the paper's Figure of Block-QNN-S "
        "(1x1/3x3 and 1x1/5x5 branches concatenated, added to a pooled shortcut); the "
        "paper's figure does not give an exact layer list, so this is not the published block",
    },
}


def preset(name: str) -> Block:
    if name not in PRESETS:
        raise ConfigError(f"unknown block preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return Block.parse(PRESETS[name]["nsc"], require_terminal=True)
