"""train.py's exports: TorchScript and ONNX of the trained network, the block's JSON beside them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from blockqnn.space.nsc import Block


def export(model, example: torch.Tensor, run_dir: Path, block: Block) -> dict[str, str]:
    """TorchScript and ONNX exports of the network, with the block's JSON beside them."""
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)
    net = model.net.eval().cpu()
    example = example.cpu()
    out = {}
    with torch.no_grad():
        traced = torch.jit.trace(net, example)
    ts = run_dir / "model.torchscript.pt"
    traced.save(str(ts))
    out["torchscript"] = str(ts)
    onnx_path = run_dir / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        net,
        (example,),
        str(onnx_path),
        input_names=["images"],
        output_names=["logits"],
        dynamo=True,
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        verbose=False,
    )
    out["onnx"] = str(onnx_path)
    (run_dir / "block.json").write_text(
        json.dumps({"nsc": block.to_list(), "key": block.key}) + "\n"
    )
    out["block"] = str(run_dir / "block.json")
    return out
