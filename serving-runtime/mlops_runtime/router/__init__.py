"""The traffic router in front of model variants: weighted, sticky, mirrored."""
