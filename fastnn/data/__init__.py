"""Data: MNIST and Fashion-MNIST as IDX files (datasets), folders of images (folders), image
decoding (images), augmentation (augment), the CSR form the fused kernels read (csr)."""
