"""What a data section gives the network (channels, side, classes), known without loading the
data and without importing torch: for the master of a pool or Ray search (its workers hold the
data), the surrogate evaluator and the drawings of the network."""

from __future__ import annotations

from pathlib import Path

from blockqnn.errors import ConfigError

#: (channels, side, classes) of the named sources, known without reading them.
SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 10),
    "fashion_mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
}


def shape_of(data: dict, classes: int | None = None) -> tuple[int, int, int]:
    """(channels, side, classes) the ``data`` section gives the network, without loading the
    data: for the master of a pool or Ray search (its workers hold the data) and the surrogate.
    An image folder's classes are its train/ subfolders (one per class, as ImageFolder reads),
    unless ``classes`` gives them."""
    name = data.get("name")
    if name in SHAPES:
        c, side, classes = SHAPES[name]
    elif name == "synthetic":
        c, side, classes = (int(data[k]) for k in ("in_channels", "input_size", "num_classes"))
    elif name == "image_folder" and classes is not None:
        c, side = 3, int(data["input_size"])
    elif name == "image_folder":
        train = Path(str(data.get("root") or "")) / "train"
        if not train.is_dir():
            raise ConfigError(f"data.root={data.get('root')}: no train/ folder of classes there")
        c, side = 3, int(data["input_size"])
        classes = sum(1 for d in train.iterdir() if d.is_dir())
    else:
        raise ConfigError(f"the shape of data={name!r} is not known")
    if data.get("resize"):
        side = int(data["resize"])
    return c, side, int(classes)


def network_spec(network: dict, data: dict, classes: int | None = None) -> dict:
    """The ``network`` section completed with the shape ``data`` gives it: what
    :func:`blockqnn.space.cost.network_cost` and the network drawing take."""
    c, side, classes = shape_of(data, classes)
    return {**network, "num_classes": classes, "in_channels": c, "input_size": side}
