"""Training layer: the network, the tf.data pipeline, loss weights, callbacks, the training loop and its logs.

Imports the foundation, ``data`` and ``inference``; never evaluation.
"""
