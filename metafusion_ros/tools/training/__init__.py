"""Segmentation networks for the tools: our StreetNet, the authors' ESPNets, mIoU scoring."""
