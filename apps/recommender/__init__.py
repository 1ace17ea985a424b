"""Recommender app: implicit-feedback top-k recommendations (ALS, BPR, item-kNN, EASE), served and retrained.

Read in this order: config.py -> data.py -> features.py -> model.py -> train.py -> evaluate.py -> service.py ->
lifecycle.py -> demo.py / bench.py -> __main__.py.
"""
