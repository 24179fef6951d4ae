"""How far to trust each prediction: temperature scaling of an arm's probabilities and the
detection of likely failures, both fitted on the arm's cross-validation predictions."""
