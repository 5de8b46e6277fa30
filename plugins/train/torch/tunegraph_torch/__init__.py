"""tunegraph's torch backend: the Python side of plugins/train/torch."""
