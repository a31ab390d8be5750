"""VSPW data: class table and palette, the dataset reader, training augmentation, a synthetic dataset."""
