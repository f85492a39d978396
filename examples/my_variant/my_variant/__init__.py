"""An example bench plugin: ``tiny-cnn``, a small CNN to put beside the book's ``net``."""
