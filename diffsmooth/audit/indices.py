"""Image index sets written compactly: [0, 1, 2, 3, 10, 12, 14] -> '0-3, 10-14 step 2'."""
from __future__ import annotations


def compact_indices(indices) -> str:
    """[0,1,2,3,10,12,14] -> '0-3, 10-14 step 2' (arithmetic runs of >= 3 collapse)."""
    idx = list(indices)
    parts, i = [], 0
    while i < len(idx):
        j = i
        if i + 1 < len(idx):
            step = idx[i + 1] - idx[i]
            while j + 1 < len(idx) and idx[j + 1] - idx[j] == step and step > 0:
                j += 1
        if j - i >= 2:
            step = idx[i + 1] - idx[i]
            parts.append(f"{idx[i]}-{idx[j]}" + (f" step {step}" if step != 1 else ""))
            i = j + 1
        else:
            parts.append(str(idx[i]))
            i += 1
    return ", ".join(parts)
