from .synthetic import SyntheticPhantoms
from .polyps import SyntheticPolyps
from .io import DataError, read_image, read_mask, write_png
from .folder import FolderDataset, check_data
from . import transforms
from .transforms import Compose, RandomApply, default_augmentation
from .loader import ArrayDataset, DataLoader, Subset, case_groups, split
