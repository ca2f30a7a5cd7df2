"""ROI heads of part_d2; importing registers :class:`FederatedCascadeROIHeads`."""
from .federated_loss import (  # noqa: F401
    FederatedCascadeROIHeads,
    FederatedFastRCNNOutputLayers,
    dataset_image_counts,
    federated_class_weights,
    image_counts_from_json,
    image_counts_from_records,
    sample_federated_classes,
    sigmoid_cross_entropy,
)
