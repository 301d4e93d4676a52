"""Quality guidance for semi-supervised learning (QAR loss, quality-weighted pseudolabels).

Not implemented yet: this package will hold wrappers around any ``SegmentationMethod``."""
