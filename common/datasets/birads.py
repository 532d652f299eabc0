"""Image labels from a BI-RADS assessment, for datasets without pathology for every image (INbreast, VinDr-Mammo).

BI-RADS 1 (negative) and 2 (benign) are negatives; 4 (4a-4c, suspicious), 5 (highly suggestive of
malignancy) and 6 (biopsy-proven malignancy) are positives; 0 (incomplete) has no label. BI-RADS 3
("probably benign", <2% malignancy) is the contested boundary, so it is a choice (`--birads3`):

* `negative` (default): Shen et al., "Deep learning to improve breast cancer detection on screening
  mammography", Sci Rep 9:12495 (2019), doi:10.1038/s41598-019-48995-4, label INbreast images by BI-RADS
  because INbreast has no pathology for every image; the rule taken here for their INbreast experiments is
  BI-RADS 1-3 negative and 4-6 positive, which keeps all 410 INbreast images. The paper's own wording could
  not be retrieved when this was written (offline); the same cut is the one Zhu et al. (MICCAI 2017) state for
  INbreast ("malignant when the score is above 3"). Check it against the paper before relying on it;
* `positive`: count "probably benign" as a finding (a recall-oriented label);
* `exclude`: leave BI-RADS 3 images out (they become rows of rejected.csv).
"""

from __future__ import annotations

import re

BIRADS3_RULES = ("negative", "positive", "exclude")
DEFAULT_BIRADS3 = "negative"
_CATEGORY = re.compile(r"^(?:BIRADS)?([0-6])[ABC]?$")
_SEPARATORS = re.compile(r"[\s_\-]+")


class BiradsError(ValueError):
    """An assessment that cannot become a label; the message is the rejected row's reason."""


def parse_birads(text: str) -> int:
    """`4a`, `4`, `BI-RADS 4` -> 4; raises BiradsError for anything that is not a category 0-6."""
    match = _CATEGORY.match(_SEPARATORS.sub("", str(text).upper()))
    if not match:
        raise BiradsError(f"BI-RADS value {str(text)[:20]!r} is not a category 0-6")
    return int(match.group(1))


def birads_label(text: str, birads3: str = DEFAULT_BIRADS3) -> int | None:
    """1 positive, 0 negative, None when the rule leaves the image out (BI-RADS 3 with `exclude`)."""
    if birads3 not in BIRADS3_RULES:
        raise ValueError(f"birads3 must be one of {', '.join(BIRADS3_RULES)}, got {birads3!r}")
    category = parse_birads(text)
    if category == 0:
        raise BiradsError("BI-RADS 0 (incomplete assessment) gives no label")
    if category == 3:
        return {"negative": 0, "positive": 1, "exclude": None}[birads3]
    return int(category >= 4)
