"""medseg: 3D lesion segmentation with a focal + Dice UNet, lesion-wise metrics and MLflow."""

__version__ = "0.2.0"
