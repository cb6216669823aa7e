"""`digits`: scikit-learn's bundled `load_digits` (1,797 real 8x8 grey digits, 10 classes).

Fixed stratified split (20 % test, seed 0), pixel values scaled to [0, 1] and upsampled 2x to 16x16
(bilinear); static frames [1, 16, 16] for direct (or rate) encoding. Nothing downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ttsnn_cli.data import DataBundle, register_dataset

SIZE = 16
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): x float [N, 1, 16, 16] in [0, 1], y long [N]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        list(range(len(labels))), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    train_idx, test_idx = sorted(train_idx), sorted(test_idx)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


@register_dataset("digits", needs_dir=False)
def load_digits_data(_: str | None, timesteps: int, augment: bool) -> DataBundle:
    xtr, ytr, xte, yte = digits_tensors()
    return DataBundle("digits", TensorDataset(xtr, ytr), TensorDataset(xte, yte), (1, SIZE, SIZE), 10)
