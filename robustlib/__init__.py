"""The library under the two scripts (vgg_training.py, adv_testing.py) and the studies: the attack
registry, datasets, checkpoints, settings, metrics, processes, errors and the study reports."""
