"""Data: the dataset registry, download (mirrors, verification, safe extraction), the raw
readers, the split stage, and the LightningDataModule over its arrays."""
