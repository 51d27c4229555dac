"""Deep convolutional Gaussian mixture models."""
