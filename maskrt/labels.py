"""Class order and image statistics shared by training, export and scoring."""

from __future__ import annotations

#: Class index -> name, in torchvision ImageFolder order. "Positive" is ``without_mask``.
CLASSES: tuple[str, str] = ("with_mask", "without_mask")
WITH_MASK = 0
WITHOUT_MASK = 1

#: Side of the square network input, in pixels.
INPUT_SIZE = 224
#: Side of the layer4 feature map at INPUT_SIZE.
FEATURE_SIZE = 7
FEATURE_CHANNELS = 512

#: ImageNet statistics in RGB order, applied inside the exported graph.
IMAGENET_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)
