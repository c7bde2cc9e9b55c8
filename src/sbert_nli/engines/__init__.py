"""Alternative training engines behind the same config and output folder."""
