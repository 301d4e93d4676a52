"""Data layer: file I/O, dataset readers, layout detection, checks and splits."""
from qgseg.data.case import Case
from qgseg.data.check import CheckReport, check_dataset
from qgseg.data.datasets import (
    CaseEntry,
    DataProblem,
    FolderDataset,
    SegDataset,
    read_csv_list,
    read_dataset_yaml,
    read_folder,
    read_msd,
    read_ssl4mis,
    read_unlabeled_folder,
)
from qgseg.data.detect import open_dataset
from qgseg.data.io import IMAGE_EXTENSIONS, DataError, read_case_files, read_image, read_mask, write_mask
from qgseg.data.pairing import PairingResult, pair_files
from qgseg.data.splits import first_groups, read_split_file, split_by_groups

__all__ = [
    "Case", "CheckReport", "check_dataset", "CaseEntry", "DataProblem", "FolderDataset", "SegDataset",
    "read_csv_list", "read_dataset_yaml", "read_folder", "read_msd", "read_ssl4mis", "read_unlabeled_folder",
    "open_dataset", "IMAGE_EXTENSIONS", "DataError", "read_case_files", "read_image", "read_mask", "write_mask",
    "PairingResult", "pair_files", "first_groups", "read_split_file", "split_by_groups",
]
