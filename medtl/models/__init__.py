"""Networks with a separable encoder, pretrained-weight loading and transfer strategies."""
