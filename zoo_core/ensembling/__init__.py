"""``zoo ensemble search``: the weights of a linear ensembler, every grid point scored in one pass.

``search`` holds the grid and the exact scorer, ``cache`` the per-model probability cache,
``command`` the command line.
"""
