"""The model: networks, the LightningModules around them, and checkpoint loading; what the
train stage builds and evaluate, export and predict read."""
