"""A synthetic text task with a learnable rule, for trying a token-id classifier offline.

    token_ids, labels = marker_tokens(2048, num_classes=4, vocabulary_size=40, length=16, seed=0)

No TensorFlow here (NumPy only).
"""

import numpy as np


def marker_tokens(count, *, num_classes=4, vocabulary_size=40, length=16, seed=0):
    """Token-id sequences whose label is the marker token that occurs most often.

    Tokens 1..num_classes are the markers (token k + 1 marks class k); the others,
    num_classes + 1 .. vocabulary_size - 1, are filler. In every sequence the label's marker
    occurs 4 times and each other marker 0 to 2 times, at random places among filler tokens.
    The counts decide the label, so a bag-of-words model (an embedding averaged over the
    sequence, then a classifier) can learn the rule; chance is 1 / num_classes.

    Args:
      count: how many sequences.
      num_classes: how many classes (and markers).
      vocabulary_size: token ids lie in [1, vocabulary_size).
      length: tokens per sequence; at least 4 + 2 * (num_classes - 1).
      seed: the NumPy seed.

    Returns:
      (token ids int32 [count, length], labels int32 [count]).
    """
    needed = 4 + 2 * (num_classes - 1)
    if length < needed or vocabulary_size <= num_classes + 1:
        raise ValueError(f"marker_tokens needs length >= {needed} (4 + 2 per other marker) and "
                         f"vocabulary_size > {num_classes + 1}, got length={length}, "
                         f"vocabulary_size={vocabulary_size}.")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    tokens = rng.integers(num_classes + 1, vocabulary_size, (count, length))
    markers = np.arange(1, num_classes + 1)
    for row, label in enumerate(labels):
        counts = rng.integers(0, 3, num_classes)
        counts[label] = 4
        placed = np.repeat(markers, counts)
        tokens[row, rng.choice(length, len(placed), replace=False)] = placed
    return tokens.astype(np.int32), labels.astype(np.int32)
