"""Dataset readers (Cityscapes, CamVid) and the synthetic drive generator."""
