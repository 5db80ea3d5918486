"""hf-structguard: structure-faithful instance unlearning for timm image classifiers."""

__version__ = "0.1.0"
