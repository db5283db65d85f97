"""The meta classifier (eq. 13), its training and the evaluation tools (§4-§6)."""
