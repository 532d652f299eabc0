"""Radiomics of thesis section 4.5: breast segmentation, the 34 OpenBreast features per image, patient
vectors of 141 attributes and the PCA + gradient boosting model built on them."""

from common.radiomics.features import FEATURE_NAMES, extract_features

__all__ = ["FEATURE_NAMES", "extract_features"]
