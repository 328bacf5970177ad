"""tinyseg's hand-written CUDA C kernels (*.cu), shipped as package data; see tinyseg/cuda."""
