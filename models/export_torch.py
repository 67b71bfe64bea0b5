"""Export a PyTorch backbone to an ONNX model framecull can use as its novelty embedding.

Optional: the daemon never imports this and torch is not a dependency of framecull. Run it on
a workstation, copy the .onnx to the device, and point [gates.novelty] model at it.

    # a torchvision backbone with weights you already have on disk (nothing is downloaded)
    python models/export_torch.py --torchvision resnet18 --weights resnet18.pth --out resnet18.onnx
    # a tiny random-weight network, to check the toolchain end to end
    python models/export_torch.py --tiny --out tiny.onnx

The exported graph takes raw 0..255 RGB pixels, float32 NCHW [1, 3, H, W], and does the
ImageNet normalisation itself, then global-average-pools the backbone's feature map and
L2-normalises it: output "embedding" float32 [1, D]. So the only model setting it needs in the
camera's config is color = "RGB" (see models/README.md, "Bring your own model").
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelsToEmbedding(nn.Module):
    """Raw RGB pixels -> normalised input -> backbone -> pooled, L2-normalised embedding."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.backbone((image - self.mean) / self.std)
        if features.dim() == 4:  # a feature map [1, C, h, w]
            features = features.mean(dim=(2, 3))
        features = features.flatten(1)
        return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def torchvision_backbone(name: str, weights: Path) -> nn.Module:
    """A torchvision classifier without its classification head, weights from a local file."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    if hasattr(model, "features"):  # MobileNet, EfficientNet, VGG, SqueezeNet, ConvNeXt, ...
        return model.features
    if hasattr(model, "fc"):  # ResNet, RegNet, ...: keep the pooling, drop the classifier
        model.fc = nn.Identity()
        return model
    raise SystemExit(f"{name}: do not know where its feature extractor ends; wrap it yourself")


def tiny_backbone(seed: int = 0) -> nn.Module:
    """Two random conv layers: enough to check export and loading, useless as features."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())


def export(backbone: nn.Module, path: Path, size: tuple[int, int] = (224, 224), opset: int = 17) -> Path:
    """Write the ONNX model for a backbone; size is (width, height). Returns the path."""
    width, height = size
    model = PixelsToEmbedding(backbone).eval()
    example = torch.zeros(1, 3, height, width)
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        # dynamo=False: the TorchScript exporter needs no extra package (onnxscript); torch >= 2.9
        # warns that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["embedding"],
                          opset_version=opset, dynamo=False)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--torchvision", metavar="NAME", help="a torchvision model name, e.g. resnet18")
    source.add_argument("--tiny", action="store_true", help="a tiny random-weight network")
    parser.add_argument("--weights", type=Path, help="state_dict file for --torchvision (never downloaded)")
    parser.add_argument("--size", default="224x224", help="input WIDTHxHEIGHT (default 224x224)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.torchvision:
        if args.weights is None:
            parser.error("--torchvision needs --weights (a local state_dict file)")
        backbone = torchvision_backbone(args.torchvision, args.weights)
    else:
        backbone = tiny_backbone()
    path = export(backbone, args.out, size=(width, height))
    print(f"{path}: input 'image' [1,3,{height},{width}] raw RGB 0..255; output 'embedding'. "
          f'Config: model = "{path}", color = "RGB"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
